"""The top-activations sheet and record: per channel, the winners' patches and their projections
as one figure (`sheet_figure`), and which files won where, as JSON-ready metadata (`metadata_dict`)."""

from __future__ import annotations

import math
import textwrap

import numpy as np
from PIL import Image

from .imagefolder import relative_name
from .topact import TopActResult


def _mosaic(tiles: list[Image.Image], k: int, gap: int = 2) -> np.ndarray:
    """Tiles (same size) in a ceil(sqrt(k))-wide grid with white gaps; empty slots stay white."""
    g = math.ceil(math.sqrt(k))
    rows = math.ceil(k / g)
    th, tw = (tiles[0].height, tiles[0].width) if tiles else (8, 8)
    out = np.full((rows * th + (rows - 1) * gap, g * tw + (g - 1) * gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles[:k]):
        r, c = divmod(i, g)
        out[r * (th + gap):r * (th + gap) + th, c * (tw + gap):c * (tw + gap) + tw] = np.asarray(tile)
    return out


def sheet_title(result: TopActResult) -> str:
    c = result.config
    alias = f" ({result.canonical})" if result.canonical != result.layer else ""
    scanned = (f"{result.scanned - len(result.skipped)} images" +
               (f" ({len(result.skipped)} unreadable skipped)" if result.skipped else ""))
    stopped = f", INTERRUPTED after {result.scanned} of {result.found}" if result.interrupted else ""
    if result.projected is not None:
        stopped += f", projections INTERRUPTED ({result.projected[0]} of {result.projected[1]} drawn)"
    f = result.rf
    if c.patch == "image":
        what = f"whole images ({c.size} px), receptive field outlined"
    elif min(f.size) >= c.size:
        what = (f"whole images: the receptive field ({f.size[0]}x{f.size[1]} px) covers all of the "
                f"{c.size}-px image")
    else:
        what = f"image patches at the receptive field ({f.size[0]}x{f.size[1]} px of {c.size})"
    how = {"deconvnet": "deconvnet projections (Zeiler & Fergus 2014)",
           "guided": "projections by guided backprop (Springenberg et al. 2015)",
           "gradient": "gradients (Simonyan et al. 2014)"}[c.rule]
    note = ("\n(no max pooling before this layer: its deconvnet projections do not depend on the image; "
            "--rule guided does)" if c.rule == "deconvnet" and not result.switches else "")
    return (f"{c.net}  {result.layer}{alias}: top {c.top} of {scanned} in {result.folder.name or result.folder}"
            f"{stopped}\nleft: {what}\nright: their {how}; small numbers: the activation{note}")


def sheet_figure(result: TopActResult, dpi: int = 110) -> Image.Image:
    """Per channel a block: the k patches in a grid, then their projections; RGB image out."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = result.config.top
    n = len(result.channels)
    cols = 1 if n <= 3 else 2 if n <= 16 else 3
    rows = math.ceil(n / cols)
    g = math.ceil(math.sqrt(k))
    grid_rows = math.ceil(k / g)
    mw = 2.1                                   # width of one mosaic, inches
    mh = mw * grid_rows / g                    # tiles are square
    label, gap, pair_gap, side = 0.45, 0.35, 0.12, 0.15
    block_w = label + 2 * mw + pair_gap
    grid_w = cols * block_w + (cols - 1) * gap
    fig_w = max(6.5, 2 * side + grid_w)        # room for the title when there is one column
    # About 15 characters per inch at 9 pt: wrap rather than let a line run off a narrow figure.
    title = "\n".join(textwrap.fill(line, int(fig_w * 15)) for line in sheet_title(result).split("\n"))
    top = 0.35 + 0.16 * (title.count("\n") + 1)
    fig_h = top + rows * (mh + gap) + side
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    for i, channel in enumerate(result.channels):
        r, c = divmod(i, cols)
        x0 = (fig_w - grid_w) / 2 + c * (block_w + gap)
        y0 = fig_h - top - (r + 1) * (mh + gap) + gap
        fig.text((x0 + label * 0.5) / fig_w, (y0 + mh / 2) / fig_h, f"ch\n{channel}", ha="center",
                 va="center", fontsize=10, fontweight="bold")
        winners = result.winners.get(channel, [])
        for j, (attr, left) in enumerate((("patch", x0 + label), ("projection", x0 + label + mw + pair_gap))):
            ax = fig.add_axes((left / fig_w, y0 / fig_h, mw / fig_w, mh / fig_h))
            tiles = [getattr(w, attr) for w in winners]
            mosaic = _mosaic(tiles, k)
            ax.imshow(mosaic, interpolation="antialiased")
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j == 0 and tiles:
                th, tw = tiles[0].height, tiles[0].width
                for idx, w in enumerate(winners):
                    rr, cc = divmod(idx, g)
                    ax.text(cc * (tw + 2) + 1, rr * (th + 2) + th - 1, _short(w.value), fontsize=5,
                            color="white", va="bottom", ha="left",
                            bbox={"facecolor": "black", "alpha": 0.55, "pad": 0.6, "linewidth": 0})
            if not tiles:
                empty = "not projected (interrupted)" if result.projected is not None else "no images"
                ax.text(0.5, 0.5, empty, transform=ax.transAxes, ha="center", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9, y=1 - 0.08 / fig_h, va="top")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")


def _short(value: float) -> str:
    """An activation in at most ~4 characters: 0.512, 37.2, 8.9k, 1.2M."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def metadata_dict(result: TopActResult, max_names: int = 50) -> dict:
    """JSON-ready: which files won (relative paths), values, positions, patches; what was skipped."""
    f = result.rf
    return {
        "layer": result.layer, "canonical_layer": result.canonical, "channels": result.channels,
        "folder": str(result.folder), "images_found": result.found, "images_scanned": result.scanned,
        "skipped_count": len(result.skipped),
        "skipped": [relative_name(p, result.folder) for p in result.skipped[:max_names]],
        "interrupted": result.interrupted or result.projected is not None,
        **({"projections_drawn": list(result.projected)} if result.projected is not None else {}),
        "max_pooling_before_layer": result.switches,
        "receptive_field": {"size": list(f.size), "stride": list(f.stride), "offset": list(f.offset),
                            "effective": f.effective},
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        "winners": {str(ch): [{"rank": w.rank, "file": relative_name(w.path, result.folder),
                               "value": w.value, "row": w.row, "col": w.col, "box": list(w.box)}
                              for w in ws] for ch, ws in result.winners.items()},
    }

"""Activations of one layer: a forward pass, per-channel statistics and a grid of feature maps.

The "activation maps of conv layers" view: the image goes through the backbone once (no
gradients) and each channel of the layer asked for becomes a colour-mapped panel, the most active
channels first. Engine only: images in, tensors, statistics and figures (PIL images) out.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image

from .. import images
from ..argcheck import as_image, config_of
from ..devices import check_fits
from ..errors import ConfigError
from ..nets import Backbone, flat_shape, natural_side, pick_layer
from ..nets.memory import bytes_per_pixel
from ..options import suggest
from .configs import ALL_CONV, ActivationsConfig
from .loadnet import engine_net

VGG_LAYER, AUTO_DEPTH = "relu3_1", 0.4  # --layer auto on the VGG nets and on others
DEFAULT_SIZE = 224               # long side in px unless --size (or a run's smaller input size)
# The config and its checks live in vis.configs (torch-free, for the CLI).


@dataclass
class LayerActivations:
    name: str                  # as asked for (canonical for all-conv)
    canonical: str             # the net's canonical name (relu3_1 for block3_conv1)
    maps: torch.Tensor         # [C, H, W] float32 on the CPU
    mean: torch.Tensor         # [C] mean over the H*W positions
    max: torch.Tensor          # [C] maximum over the positions
    positive: torch.Tensor     # [C] fraction of positions > 0 (0..1; ~1 - sparsity after a ReLU)
    order: list[int]           # all C channel indices, most active first by config.sort

    @property
    def shape(self) -> list[int]:
        return list(self.maps.shape)


@dataclass
class ActivationsResult:
    image: Image.Image         # the input as the net saw it (resized RGB)
    config: ActivationsConfig  # as run (device resolved)
    layers: list[LayerActivations]
    seconds: float             # forward pass and statistics (not net loading, not figures)


@dataclass
class Panel:
    label: str
    data: np.ndarray           # [H, W] feature map (float32), or [H, W, 3] uint8 for the input
    channel: int | None        # None for the input image


def resolve_layers(net: Backbone, layer: str) -> list[tuple[str, str]]:
    """[(name as asked, canonical name)]; ConfigError with a "did you mean" for unknown names."""
    layer = pick_layer(net, layer, VGG_LAYER, AUTO_DEPTH)
    if layer == ALL_CONV:
        return [(n, n) for n in net.block_outputs()]
    try:
        return [(layer, net.resolve(layer))]
    except ConfigError:
        if suggest(layer, [ALL_CONV]):  # e.g. "all_conv": net.resolve cannot know this one
            raise ConfigError(f"unknown layer {layer!r} (did you mean {ALL_CONV!r}?)") from None
        raise


def channel_order(mean: torch.Tensor, max_: torch.Tensor, sort: str) -> list[int]:
    """Channel indices, largest statistic first; ties keep index order (a stable sort)."""
    if sort == "index":
        return list(range(mean.numel()))
    key = mean if sort == "mean" else max_
    return key.sort(descending=True, stable=True).indices.tolist()


def activations(image: Image.Image, config: ActivationsConfig | None = None,
                net: Backbone | None = None) -> ActivationsResult:
    """Feature maps and per-channel statistics of `config.layer` for `image` (a PIL image in any
    mode, an image file's path, or a float tensor [1, 3, H, W] in [0, 1]).

    `net` reuses an already loaded net (the result then names it as its net, whatever config.net
    said); by default config.net is loaded.
    """
    config = ActivationsConfig() if config is None else config
    config_of(config, ActivationsConfig)
    config = config.validate()
    image = as_image(image, "image")
    config, net, device, _ = engine_net(config, net)
    config = replace(config, device=str(device), layer=pick_layer(net, config.layer, VGG_LAYER, AUTO_DEPTH),
                     size=config.size or natural_side(net, DEFAULT_SIZE))
    layers = resolve_layers(net, config.layer)
    for name, canonical in layers:
        shape = flat_shape(net, canonical)  # torchvision and run nets: their heads are vectors
        if shape is not None:
            raise ConfigError(f"layer {name} of {net.net_name} has no spatial grid (shape {shape}), "
                              "so no feature maps to show; choose a convolutional layer")
    small = images.resize_long_side(images.to_rgb(image), config.size)
    # Each 2x2 pooling halves (and floors) the size: a side under the stride leaves nothing.
    stride = net.stride_of([c for _, c in layers])
    if min(small.size) < stride:
        raise ConfigError(f"the image at {config.size} px on its long side is {small.width}x{small.height}, "
                          f"too small for {layers[-1][0]} (needs a short side of {stride} px); "
                          "use a larger --size or a shallower layer")
    # (activations --size 8192 on VGG19 would hold 26 GB or more: the system killed such a process)
    check_fits(small.width * small.height, device, f"{net.net_name} up to {layers[-1][0]} at {small.width}x"
               f"{small.height}", "--size", bytes_per_pixel(net, [c for _, c in layers]))
    start = time.perf_counter()
    x = images.pil_to_tensor(small, device=device)
    with torch.no_grad():
        feats = net.features(x, [c for _, c in layers])  # one pass for all layers asked for
        out = []
        for name, canonical in layers:
            maps = feats[canonical][0].float()                          # [C, H, W]
            mean, top = maps.mean(dim=(1, 2)), maps.amax(dim=(1, 2))
            positive = (maps > 0).float().mean(dim=(1, 2))
            out.append(LayerActivations(name, canonical, maps.cpu().contiguous(), mean.cpu(), top.cpu(),
                                        positive.cpu(), channel_order(mean.cpu(), top.cpu(), config.sort)))
    return ActivationsResult(small, config, out, time.perf_counter() - start)


def stats_dict(result: ActivationsResult) -> dict:
    """JSON-ready statistics: per layer its shape, the channel order and every channel's stats
    (listed by channel index, so channels[i] is channel i)."""
    layers = []
    for la in result.layers:
        channels = [{"index": i, "mean": float(m), "max": float(x), "positive_fraction": float(p)}
                    for i, (m, x, p) in enumerate(zip(la.mean.tolist(), la.max.tolist(), la.positive.tolist()))]
        layers.append({"layer": la.name, "canonical": la.canonical, "shape": la.shape,
                       "order": la.order, "channels": channels})
    return {"net": result.config.net, "sort": result.config.sort,
            "input_size": list(result.image.size), "layers": layers}


def figure_metadata(result: ActivationsResult, layer: LayerActivations, **inputs) -> dict:
    """What the figure of `layer` records (PNG text and .json sidecar): the config as run, `inputs`
    (how the caller names the image), the layer, its shape, the input size and the channels shown."""
    from ..runinfo import run_metadata

    return run_metadata("activations", result.config.to_dict(), **inputs, layer=layer.name,
                        canonical_layer=layer.canonical, shape=layer.shape, input_size=list(result.image.size),
                        seconds=round(result.seconds, 3), channels_shown=layer.order[:result.config.max_channels])


# ------------------------------------------------------------------------------------ figures

def grid_panels(result: ActivationsResult, layer: LayerActivations) -> list[Panel]:
    """The input image, then up to config.max_channels feature maps in `layer.order`."""
    panels = [Panel(f"input {result.image.width}x{result.image.height}", np.asarray(result.image), None)]
    for c in layer.order[:result.config.max_channels]:
        panels.append(Panel(f"#{c}  mean {float(layer.mean[c]):.3g}", layer.maps[c].numpy(), c))
    return panels


def layer_title(result: ActivationsResult, layer: LayerActivations) -> str:
    c, h, w = layer.shape
    alias = f" ({layer.canonical})" if layer.canonical != layer.name else ""
    shown = min(c, result.config.max_channels)
    order = "by channel index" if result.config.sort == "index" else f"by {result.config.sort} activation"
    scale = "one shared scale" if result.config.shared_scale else "each panel scaled to its own range"
    return (f"{result.config.net}  {layer.name}{alias}  {c}x{h}x{w}\n"
            f"{shown} of {c} channels, {order}; {scale}")


def layer_figure(result: ActivationsResult, layer: LayerActivations) -> Image.Image:
    """The grid figure of one layer of `result`, as an RGB image."""
    return render_panels(grid_panels(result, layer), layer_title(result, layer),
                         result.config.cmap, result.config.shared_scale)


def figure_pixels(result: ActivationsResult, layer: LayerActivations, dpi: int = 110) -> int:
    """How many pixels `layer_figure` will draw (before drawing it: a server can refuse a figure of
    hundreds of channels without the seconds and memory it takes)."""
    panels = grid_panels(result, layer)
    _, _, _, _, fig_w, fig_h = _grid(panels, result.config.shared_scale)
    return int(fig_w * dpi) * int(fig_h * dpi)  # (as the canvas rounds)


_LABEL, _GAP, _TOP, _SIDE = 0.2, 0.06, 0.62, 0.12  # inches: caption, gap, title band, margin


def _grid(panels: list[Panel], shared_scale: bool) -> tuple:
    """(cols, panel width, panel height, bar width, figure width, figure height), inches: panels
    in a grid of about 4:3."""
    n = len(panels)
    maps = [p.data for p in panels if p.channel is not None]
    h, w = (maps[0] if maps else panels[0].data).shape[:2]
    aspect = min(4.0, max(0.25, h / w))                    # panel height / width
    cols = min(n, math.ceil(math.sqrt(4 / 3 * n * aspect)))
    rows = math.ceil(n / cols)
    pw = min(3.0, max(1.25, 9.0 / cols))                   # panel width, inches
    ph = pw * aspect
    bar = 0.75 if shared_scale and maps else 0.0           # room for the colour bar
    fig_w = max(6.0, 2 * _SIDE + cols * (pw + _GAP) + bar)
    fig_h = _TOP + rows * (ph + _LABEL + _GAP) + _SIDE
    return cols, pw, ph, bar, fig_w, fig_h


def render_panels(panels: list[Panel], title: str, cmap: str = "viridis",
                  shared_scale: bool = False, dpi: int = 110) -> Image.Image:
    """Panels in a grid (about 4:3), a caption above each, `title` on top; RGB image out."""
    # An explicit Agg canvas as in figures.image_strip: no pyplot, no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    maps = [p.data for p in panels if p.channel is not None]
    cols, pw, ph, bar, fig_w, fig_h = _grid(panels, shared_scale)
    label, gap, top, side = _LABEL, _GAP, _TOP, _SIDE
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    left = (fig_w - bar - cols * (pw + gap) + gap) / 2     # centre the grid
    vmin = min(float(m.min()) for m in maps) if shared_scale and maps else None
    vmax = max(float(m.max()) for m in maps) if shared_scale and maps else None
    shown = None
    for i, panel in enumerate(panels):
        r, c = divmod(i, cols)
        x0 = left + c * (pw + gap)
        y0 = fig_h - top - (r + 1) * (ph + label + gap) + gap
        ax = fig.add_axes((x0 / fig_w, y0 / fig_h, pw / fig_w, ph / fig_h))
        if panel.channel is None:
            ax.imshow(panel.data, aspect="auto", interpolation="antialiased")
        else:  # vmin/vmax None: matplotlib scales each panel to its own min..max
            shown = ax.imshow(panel.data, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto",
                              interpolation="antialiased")
        ax.set_title(panel.label, fontsize=7, pad=2)
        ax.set_xticks([])
        ax.set_yticks([])
    if bar and shown is not None:
        cax = fig.add_axes(((fig_w - bar + 0.15) / fig_w, side / fig_h, 0.15 / fig_w,
                            (fig_h - top - side) / fig_h))
        fig.colorbar(shown, cax=cax)
        cax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10, y=1 - 0.08 / fig_h, va="top")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")

"""Figures (matplotlib, Agg backend, imported lazily so the CLI starts fast)."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image


def image_strip(panels: Sequence[tuple[str, Image.Image]], title: str = "") -> Image.Image:
    """Images side by side with a caption each (e.g. first / middle / last iteration)."""
    # An explicit Agg canvas: no pyplot, no global backend switch, works headless.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = max(1, len(panels))
    aspect = panels[0][1].height / panels[0][1].width if panels else 1.0
    fig = Figure(figsize=(3.2 * n, 3.2 * aspect + 0.8), dpi=110)
    for i, (caption, img) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, n, i)
        ax.imshow(img)
        ax.set_title(caption, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")


def render(draw, size: tuple[float, float], dpi: int = 110) -> Image.Image:
    """A figure drawn by `draw(fig)` on an Agg canvas of `size` inches, as a PIL RGB image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=dpi)
    draw(fig)
    fig.tight_layout()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")

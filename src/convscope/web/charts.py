"""The classify tab's chart: each image beside its top classes as probability bars."""

from __future__ import annotations

from PIL import Image

THUMBNAIL = 384            # px, the long side of an image in the classify chart


def thumbnail(image: Image.Image, side: int = THUMBNAIL) -> Image.Image:
    """A copy at most `side` px on its long side, at least 1 px on its short one (a 4000x1 upload)."""
    w, h = image.size
    scale = min(1.0, side / max(w, h))
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS,
                        reducing_gap=3.0)


def probability_chart(preds, labels: list[str]) -> Image.Image:
    """One row per image: the image, then its top-5 classes as horizontal probability bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(preds)
    fig = Figure(figsize=(7.5, 2.1 * n), dpi=100)
    for i, (pred, label) in enumerate(zip(preds, labels)):
        ax_img = fig.add_subplot(n, 2, 2 * i + 1)
        ax_img.imshow(pred.image)
        ax_img.set_title(label, fontsize=9)
        ax_img.axis("off")
        ax = fig.add_subplot(n, 2, 2 * i + 2)
        names = [c for c, _ in pred.top][::-1]
        values = [p for _, p in pred.top][::-1]
        ax.barh(range(len(values)), values, color="tab:blue")
        ax.set_yticks(range(len(values)), names, fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_xlabel("probability", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        for y, v in enumerate(values):
            ax.text(min(v + 0.02, 0.85), y, f"{v:.1%}", va="center", fontsize=7)
    fig.tight_layout()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")

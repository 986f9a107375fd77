"""The featureviz / classviz contact sheet: one panel per target, labelled, in a near-square grid;
and what a sheet or a class picture records (PNG text and .json sidecar)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .featureviz import FeatureVizResult


def sheet_title(result: FeatureVizResult) -> str:
    c = result.config
    what = {"channel": "mean activation of each channel", "neuron": "activation of each channel's centre neuron",
            "class": "logit of each class"}[result.kind]
    prior = f"{c.param}{', decorrelated colour' if c.decorrelate else ''}"
    return (f"{c.net}  {result.layer}: what maximizes the {what}\n"
            f"{c.size} px, {c.steps} steps, {prior}; label: index, final value (start "
            f"{np.mean(result.initial):.3g} on average)")


def sheet(result: FeatureVizResult, dpi: int = 110) -> Image.Image:
    """The contact sheet: a near-square grid, one panel per target, each labelled with its index
    (and class name) and final value; the title names the net, layer, objective and settings."""
    # An explicit Agg canvas as in figures.image_strip: no pyplot, no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(result.targets)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    pw = min(2.6, max(1.3, 9.0 / cols))       # panel side, inches
    label, gap, top, side = 0.22, 0.08, 0.75, 0.12
    fig_w = max(6.5, 2 * side + cols * (pw + gap))
    fig_h = top + rows * (pw + label + gap) + side
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    left = (fig_w - cols * (pw + gap) + gap) / 2
    for i in range(n):
        r, c = divmod(i, cols)
        x0 = left + c * (pw + gap)
        y0 = fig_h - top - (r + 1) * (pw + label + gap) + gap
        ax = fig.add_axes((x0 / fig_w, y0 / fig_h, pw / fig_w, pw / fig_h))
        ax.imshow(result.images[i].permute(1, 2, 0).numpy(), interpolation="antialiased")
        text = f"{result.labels[i]}  {result.final[i]:.3g}"
        ax.set_title(text if len(text) <= 34 else text[:33] + "…", fontsize=7, pad=2)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(sheet_title(result), fontsize=9, y=1 - 0.08 / fig_h, va="top")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")


def sheet_metadata(result: FeatureVizResult, **extra) -> dict:
    """A featureviz sheet's record: the config as run, and every panel's start and final value
    (with each class panel's probability and the net's top-5 for it)."""
    from ..runinfo import run_metadata

    panels = [{"index": t, "label": label, "start": a, "final": b}
              for t, label, a, b in zip(result.targets, result.labels, result.initial, result.final)]
    if result.probabilities is not None:
        for panel, p, top in zip(panels, result.probabilities, result.top5):
            panel.update(probability=p, top5=top)
    return run_metadata("featureviz", result.config.to_dict(), seed=result.config.seed, kind=result.kind,
                        layer=result.layer, seconds=round(result.seconds, 3), panels=panels, **extra)


def picture_metadata(result: FeatureVizResult, classes) -> dict:
    """A classviz picture's record: the config as run, the class (index and name, from `classes`,
    the net's class names or None), the logit at the start and the end, its probability and the
    net's top-5 for the picture."""
    from ..runinfo import run_metadata

    k = result.targets[0]
    return run_metadata("classviz", result.config.to_dict(), seed=result.config.seed,
                        seconds=round(result.seconds, 3), class_index=k, class_name=classes[k] if classes else None,
                        start_logit=result.initial[0], logit=result.final[0],
                        probability=result.probabilities[0], top5=result.top5[0])

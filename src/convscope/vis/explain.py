"""Explain one prediction: Grad-CAM, guided backprop, guided Grad-CAM and the deconvnet, side by side.

For a classifier the target is a class (by default the top-1 prediction); for a net without a
classifier head (vgg19 here is the convolutional part only) it is one channel of a layer, by
default the channel most active on this image. The methods themselves live in
`vis.attribution`; this engine resolves the target, runs them and draws the figure.
Engine only: a PIL image in, tensors, predictions and a figure (PIL image) out.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from PIL import Image
from torch import nn

from .. import images
from ..devices import default_precision
from ..argcheck import as_image, check_loaded_net, config_of
from ..errors import ConfigError, ImageError
from ..nets import AUTO, natural_side
from ..nets.classes import class_index as _class_index
from ..optimize import precision_mode
from .attribution import Target, backproject, check_target, grad_cam, gradient_image
from .configs import EXPLAIN_MAX_SIZE as MAX_SIZE
from .configs import ExplainConfig
from .loadnet import engine_net

DEFAULT_SIZE = 224       # long side in px unless --size (or a run's smaller input size)
TOP_K = 5
CLASS, CHANNEL = "class", "channel"   # what is explained
PANEL_TITLES = {"guided": "guided backprop", "deconvnet": "deconvnet", "gradient": "gradient"}


@dataclass
class Prediction:
    index: int       # class index, or channel index for a channel target
    name: str        # class name ("class 17" when the net has none), or "channel 17"
    score: float     # softmax probability, or the channel's mean activation over positions


@dataclass
class ExplainResult:
    image: Image.Image                 # the input as the net saw it (resized RGB)
    config: ExplainConfig              # as run: device, precision, layer/channel and cam_layer resolved
    kind: str                          # CLASS or CHANNEL
    target: Target                     # the unit explained (layer "logits" for a class)
    target_name: str                   # "military uniform", or "relu5_4 channel 12"
    target_score: float                # its probability, or its mean activation
    top: list[Prediction]              # the top-5 classes, or the 5 most active channels of the layer
    cam: torch.Tensor                  # [H, W] Grad-CAM in [0, 1], at the image's size (CPU float32)
    cam_layer: str                     # the layer Grad-CAM used
    signals: dict[str, torch.Tensor]   # rule -> [3, H, W] input-space signal, raw and signed (CPU)
    guided_cam: torch.Tensor | None    # [3, H, W] guided backprop x Grad-CAM (None without "guided")
    seconds: float                     # prediction and all backward passes (not net loading, not figures)
    # Whether the net has max-pooling layers. The deconvnet sees the image only through their
    # switches (its rectifiers ignore the forward pass), so without them its map is the same for
    # every image: a property of the method the figure says out loud.
    max_pooling: bool = True

    @property
    def score_name(self) -> str:
        return "probability" if self.kind == CLASS else "mean activation"

    def summary(self) -> dict:
        """JSON-ready: the target and the top-5 (for the metadata sidecar and `--json`)."""
        return {"net": self.config.net, "kind": self.kind, "score": self.score_name,
                "input_size": list(self.image.size), "cam_layer": self.cam_layer,
                "target": {"layer": self.target.layer, "index": self.target.channel,
                           "name": self.target_name, "score": self.target_score},
                "top5": [asdict(p) for p in self.top]}


# ------------------------------------------------------------------------------------- targets

def class_index(net, text: str) -> int:
    """The class --target names (an index or a name, any case); see nets.classes."""
    return _class_index(net, text, "--target")


def class_name(net, index: int) -> str:
    return net.classes[index] if net.classes is not None else f"class {index}"


def _is_spatial(net, canonical: str) -> bool:
    """Whether a layer has a [N, C, H, W] output (from the layer table: no forward pass)."""
    shown = net.display_name(canonical)
    return any(row["name"] == shown and row["stride"] is not None for row in net.layer_table())


@dataclass
class Plan:
    """What to explain, resolved against the net before any forward pass."""
    kind: str
    layer: str              # target layer as the user may name it ("logits" for a class)
    index: int | None       # class or channel; None = choose from the image (top-1 / most active)
    cam_layer: str


def plan(net, config: ExplainConfig) -> Plan:
    """Resolve target, layer and Grad-CAM layer (names, ranges, order); ConfigError on any problem."""
    if net.num_classes is not None and config.layer == AUTO and config.channel is None:
        kind, layer = CLASS, "logits"
        index = class_index(net, config.target) if config.target is not None else None
    else:
        if config.target is not None:
            raise ConfigError(f"{net.net_name} has no classifier head, so it has no classes to --target; "
                              "explain a channel with --layer and --channel instead")
        kind = CHANNEL
        layer = net.default_cam_layer() if config.layer == AUTO else config.layer
        net.resolve(layer)  # unknown layer: "did you mean"
        index = config.channel
        if index is not None:
            check_target(net, Target(layer, index))
    cam_layer = config.cam_layer
    if cam_layer == AUTO:
        cam_layer = net.default_cam_layer()
        if net.order_of(cam_layer) > net.order_of(layer):
            # A channel target before the net's last spatial layer: the last block output at or
            # before it, or the target layer itself (whose Grad-CAM is then its activation map).
            earlier = [b for b in net.block_outputs() if net.order_of(b) <= net.order_of(layer)]
            cam_layer = earlier[-1] if earlier else layer
    else:
        net.resolve(cam_layer)
        if net.order_of(cam_layer) > net.order_of(layer):
            raise ConfigError(f"--cam-layer {cam_layer} comes after the target layer {layer}; "
                              "Grad-CAM needs a layer at or before it")
    if not _is_spatial(net, net.resolve(cam_layer)):
        raise ConfigError(f"--cam-layer {cam_layer} has no spatial grid (it is a vector per image); "
                          "choose a convolutional layer (see: convscope layers --net ...)")
    return Plan(kind, layer, index, cam_layer)


# --------------------------------------------------------------------------------------- engine

def explain(image: Image.Image, config: ExplainConfig | None = None, net=None) -> ExplainResult:
    """Explain `image` (any PIL image, a path or a float tensor [1, 3, H, W]) under `config`; `net`
    reuses a loaded net (the result then names it as its net, whatever config.net said).

    Raises ConfigError for a bad target/layer (before any forward pass) and ImageError for an image
    too small for the layers involved.
    """
    if config is not None:
        config_of(config, ExplainConfig)
    check_loaded_net(net)
    image = as_image(image, "the image")
    config, net, device, _ = engine_net((config or ExplainConfig()).validate(), net)
    precision = default_precision(device) if config.precision == "auto" else config.precision
    # (rules="guided" passed validate, then ran as the rules 'g', 'u', ...: "unknown backward rule 'g'")
    config = replace(config, size=config.size or natural_side(net, DEFAULT_SIZE), rules=config.rule_list())
    p = plan(net, config)
    stride = net.stride_of([p.layer, p.cam_layer])
    if min(image.size) >= 1:  # (an empty image: resize_long_side says so)
        w, h = images.long_side_size(image.size, config.size)  # checked before resizing: a strip may round to 0 px
        if min(w, h) < stride:
            raise ImageError(f"the image at --size {config.size} is {w}x{h}, too small for {net.net_name} up to "
                             f"{p.layer} (needs a short side of {stride} px); " + _size_hint(image.size, stride))
    small = images.resize_long_side(images.to_rgb(image), config.size)

    start = time.perf_counter()
    x = images.pil_to_tensor(small, device=device)
    with precision_mode(precision, device):
        top, index, score = _rank(net, x, p)
        target = Target(p.layer, index)
        cam = grad_cam(net, x, target, p.cam_layer)
        signals = {rule: backproject(net, x, target, rule)[0].float().cpu() for rule in config.rules}
    cam_map = cam.cam[0].float().cpu()
    guided_cam = signals["guided"] * cam_map if "guided" in signals else None
    name = class_name(net, index) if p.kind == CLASS else f"{p.layer} channel {index}"
    resolved = replace(config, device=str(device), precision=precision, cam_layer=p.cam_layer,
                       **({"layer": p.layer, "channel": index} if p.kind == CHANNEL else {}))
    return ExplainResult(small, resolved, p.kind, target, name, score, top, cam_map, p.cam_layer, signals,
                         guided_cam, time.perf_counter() - start, has_max_pooling(net))


def _size_hint(size: tuple[int, int], stride: int) -> str:
    """What --size would give the image a short side of `stride` px, or, for a strip too thin for
    any --size allowed, that it needs cropping (a bare "larger --size" sent users round in circles)."""
    needed = images.long_side_for(size, stride)
    if needed <= MAX_SIZE:
        return f"use --size {needed} or more"
    return f"the image ({size[0]}x{size[1]}) is too elongated for any --size up to {MAX_SIZE}; crop it"


def has_max_pooling(net) -> bool:
    return any(isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool2d)) for m in net.modules())


def _rank(net, x: torch.Tensor, p: Plan) -> tuple[list[Prediction], int, float]:
    """One forward pass: the top-5 (classes by probability, or channels by mean activation), the
    target index (the one asked for, else the first of that ranking) and its score."""
    with torch.no_grad():
        out = net.features(x, [p.layer])[p.layer].float()[0]
    if p.kind == CLASS:
        scores = torch.softmax(out, dim=0)
        names = lambda i: class_name(net, i)  # noqa: E731
    else:
        scores = out.flatten(1).mean(1) if out.ndim == 3 else out
        names = lambda i: f"channel {i}"  # noqa: E731
    if not torch.isfinite(scores).all():
        raise ConfigError(f"{net.net_name} gave non-finite outputs on this image; try --precision fp32")
    values, indices = scores.topk(min(TOP_K, scores.numel()))
    top = [Prediction(int(i), names(int(i)), float(v)) for v, i in zip(values, indices)]
    index = p.index if p.index is not None else top[0].index
    return top, index, float(scores[index])


# -------------------------------------------------------------------------------------- figure

def heat_overlay(image: Image.Image, cam: torch.Tensor, cmap: str = "jet", alpha: float = 0.5) -> np.ndarray:
    """`cam` [H, W] in [0, 1] through `cmap`, blended over `image` with opacity `alpha`: [H, W, 3] in [0, 1]."""
    import matplotlib

    heat = matplotlib.colormaps[cmap](cam.numpy())[..., :3]
    base = np.asarray(image, dtype=np.float32) / 255.0
    return (1 - alpha) * base + alpha * heat


def panels(result: ExplainResult) -> list[tuple[str, np.ndarray]]:
    """(caption, [H, W, 3] image in [0, 1]) in figure order: input, Grad-CAM, then per rule its
    backprojection (guided Grad-CAM right after guided backprop)."""
    c = result.config
    shown = [(f"input {result.image.width}x{result.image.height}", np.asarray(result.image) / 255.0),
             (f"Grad-CAM ({result.cam_layer})", heat_overlay(result.image, result.cam, c.cmap, c.alpha))]
    for rule in c.rules:
        label = PANEL_TITLES[rule]
        if rule == "deconvnet" and not result.max_pooling:
            label += " (no max-pool switches)"
        shown.append((label, _viewable(result.signals[rule])))
        if rule == "guided":
            shown.append(("guided Grad-CAM", _viewable(result.guided_cam)))
    return shown


def _viewable(signal: torch.Tensor) -> np.ndarray:
    return gradient_image(signal[None])[0].permute(1, 2, 0).numpy()


def title(result: ExplainResult) -> str:
    if result.kind == CLASS:
        return (f"{result.config.net}: why class {result.target.channel} '{result.target_name}' "
                f"(p = {result.target_score:.3f})")
    return f"{result.config.net}: what drives {result.target_name} (mean activation {result.target_score:.3g})"


def explain_figure(result: ExplainResult, dpi: int = 110) -> Image.Image:
    """The panels in a row, the title on top and the top-5 as a bar chart on the right; RGB image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(result, ExplainResult):
        raise ConfigError(f"explain_figure draws what explain() returns, not {type(result).__name__}")
    shown = panels(result)
    h, w = shown[0][1].shape[:2]
    pw = 2.4                                         # panel width, inches
    ph = pw * min(2.0, max(0.4, h / w))              # panel height, keeping the aspect
    gap, side, top_room, caption = 0.1, 0.15, 0.75, 0.25
    chart = 2.9                                      # the top-5 chart's width
    fig_w = 2 * side + len(shown) * (pw + gap) + chart
    fig_h = top_room + caption + max(ph, 1.9) + side
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    y0 = side + max(0.0, (1.9 - ph) / 2)
    for i, (label, data) in enumerate(shown):
        x0 = side + i * (pw + gap)
        ax = fig.add_axes((x0 / fig_w, y0 / fig_h, pw / fig_w, ph / fig_h))
        ax.imshow(np.clip(data, 0, 1), aspect="auto", interpolation="antialiased")
        ax.set_title(label, fontsize=9, pad=3)
        ax.set_xticks([])
        ax.set_yticks([])
    _top_chart(fig, result, (side + len(shown) * (pw + gap) + 0.15) / fig_w, y0 / fig_h,
               (chart - 0.3) / fig_w, max(ph, 1.9) / fig_h)
    rules = ", ".join(PANEL_TITLES[r] for r in result.config.rules)
    fig.suptitle(f"{title(result)}\nGrad-CAM at {result.cam_layer}; {rules}: mid-grey = 0",
                 fontsize=10, y=1 - 0.08 / fig_h, va="top")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")


def _top_chart(fig, result: ExplainResult, left: float, bottom: float, width: float, height: float) -> None:
    """Horizontal bars, one per top-5 entry, its name written above the bar (long ImageNet names fit)."""
    ax = fig.add_axes((left, bottom, width, height))
    rows = result.top
    peak = max([abs(p.score) for p in rows] + [1e-12])
    scale = 1.0 if result.kind == CLASS else peak
    for k, p in enumerate(rows):
        y = len(rows) - 1 - k
        chosen = p.index == result.target.channel
        ax.barh(y, max(p.score, 0) / scale, height=0.38, color="tab:red" if chosen else "tab:blue")
        text = (f"{p.name} ({p.index}): {100 * p.score:.1f}%" if result.kind == CLASS
                else f"{p.name}: {p.score:.3g}")
        ax.text(0, y + 0.26, text, fontsize=8, va="bottom",
                weight="bold" if chosen else "normal")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.5, len(rows) - 0.1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"top {len(rows)} classes" if result.kind == CLASS
                 else f"most active channels of {result.target.layer}", fontsize=9, pad=3)
    for spine in ("top", "right", "left"):
        ax.spines[spine].set_visible(False)

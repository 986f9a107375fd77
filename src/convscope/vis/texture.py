"""Texture synthesis by Gram-matrix matching (Gatys, Ecker & Bethge 2015, "Texture Synthesis Using
Convolutional Neural Networks").

A new image, started from white noise, is optimized until the Gram matrices of its features at a
few layers match those of the source texture. Gram matrices discard where features occur and keep
only which occur together, so the result has the source's "stuff" but not its layout, at any size
and aspect. Engine only: images in, image and figures of merit out, progress through a callback.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from PIL import Image
from torch import nn

from .. import images
from ..argcheck import as_image, callback_or_none, config_of
from ..devices import check_fits, default_precision, resolve_device
from ..errors import ConfigError, ImageError
from ..losses import gram, range_penalty, style_loss, tv_loss
from ..nets import AUTO, Backbone, cast_for, flat_shape, get_net
from ..optimize import Interrupted, OptimizeResult, Progress, optimize_image, optimizer_state_bytes
from .configs import DEFAULT_LAYERS, TextureConfig

# The config and its limits live in vis.configs (torch-free, for the CLI).


@dataclass
class TextureResult:
    image: Image.Image                   # the synthesized texture, size (W, H) as asked for
    config: TextureConfig                # as run (resolved device and precision)
    gram_history: list[float]            # the weighted Gram loss per iteration
    history: list[dict[str, float]]      # every term per iteration
    losses: dict[str, float]             # terms and total ("loss") of the returned image
    final_loss: float                    # its Gram loss
    seconds: float
    source: Image.Image                  # the source as measured (resized to source_size)
    snapshots: list[tuple[str, Image.Image]] = field(default_factory=list)  # first / middle / last
    graphed: bool = False


class TextureObjective:
    """Weighted Gram loss (+ optional TV and range terms); targets are computed once, at init.

    `image_net` evaluates the optimized image; it differs from `net` (which measures the source)
    only for tileable textures, where its convolutions pad circularly.
    """

    def __init__(self, net: Backbone, source: torch.Tensor, config: TextureConfig,
                 image_net: Backbone | None = None):
        self.net, self.config = image_net or net, config
        self.layers, self.weights = tuple(config.layers), config.weights()
        with torch.no_grad():
            feats = net.features(source, self.layers)
            # "relative" = Gram / HW; the per-layer scale below is what makes it relative.
            self.targets = {n: gram(feats[n].float(), "relative") for n in self.layers}
        # Each layer's squared Gram error is divided by its target's mean square (fixed here), so
        # every layer counts: the raw errors of the Caffe weights span six orders of magnitude
        # between relu1_1 and pool4. (Gatys et al. rescaled the network's filters instead.)
        self.scale = {n: 1.0 / float(t.pow(2).mean().clamp_min(1e-12)) for n, t in self.targets.items()}

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        feats = self.net.features(x, self.layers)
        loss = sum(w * self.scale[n] * style_loss(feats[n].float(), self.targets[n], "relative")
                   for n, w in zip(self.layers, self.weights))
        terms = {"gram": loss}
        if c.tv_weight:
            terms["tv"] = c.tv_weight * _tv(x.float(), c.tileable)
        if c.range_weight:
            terms["range"] = c.range_weight * range_penalty(x.float())
        return terms


def _tv(x: torch.Tensor, tileable: bool) -> torch.Tensor:
    # A tile's wrap-around neighbours count too: pad one row and column from the opposite edges.
    if tileable:
        x = torch.cat([x, x[..., :1, :]], dim=-2)
        x = torch.cat([x, x[..., :1]], dim=-1)
    return tv_loss(x, "squared")


def circular_net(net: Backbone) -> Backbone:
    """A copy of `net` whose convolutions pad circularly: the image is seen as a torus.

    Why circular padding rather than evaluating a randomly rolled copy each iteration: the
    objective stays one fixed function (L-BFGS's curvature pairs need that; random shifts make it
    stochastic), and every iteration enforces the wrap everywhere, not at one random seam. The
    result is exactly periodic at every layer when W and H are multiples of the deepest layer's
    stride (16 for pool4); otherwise pooling drops the last row/column at that depth, which loosens
    the wrap there a little while the shallow layers still hold it. A copy, so the caller's
    (possibly shared) net keeps zero padding for measuring the non-periodic source.
    """
    tiled = copy.deepcopy(net)
    for m in tiled.modules():
        if isinstance(m, nn.Conv2d):
            m.padding_mode = "circular"  # Conv2d.forward pads with F.pad(mode=...) when not "zeros"
    return tiled


def synthesize(source: Image.Image, config: TextureConfig | None = None,
               callback: Callable[[Progress], None] | None = None, label: str = "") -> TextureResult:
    """Synthesize a texture like `source` (a PIL image, a path or a float tensor [1, 3, H, W]) at config.size (W, H).

    Progress records carry the image every `save_every` iterations. `label` names the source in
    error messages. Raises Interrupted (best image so far, finished as the result would be) on
    Ctrl-C and UserError subclasses on bad input.
    """
    source = as_image(source, "the source texture")
    config = config_of(TextureConfig() if config is None else config, TextureConfig).validate()
    callback_or_none(callback, "Progress")
    device = resolve_device(config.device)
    w, h = config.size
    check_fits(w * h, device, f"a {w}x{h} texture", "--size", state_bytes=optimizer_state_bytes(
        config.optimizer, 3 * w * h, config.iterations - _warmup(config), config.lbfgs_history))
    precision = default_precision(device) if config.precision == "auto" else config.precision
    config = replace(config, device=str(device), precision=precision, size=tuple(config.size),
                     layers=tuple(config.layers))
    # NHWC: what cuDNN's tensor-core and oneDNN's bf16 kernels want (as in style transfer).
    net = get_net(config.net, config.pooling, device).use_channels_last(device.type in ("cuda", "cpu"))
    if config.layers == (AUTO,):
        auto = DEFAULT_LAYERS if isinstance(net, Backbone) else tuple(net.block_outputs()[:5])
        config = replace(config, layers=auto).validate()  # --layer-weights must now match in number
    for name in config.layers:
        shape = flat_shape(net, net.resolve(name))  # unknown names fail here, before any work
        if shape is not None:  # (a classifier's logits: a ValueError deep in gram)
            raise ConfigError(f"layer {name} of {net.net_name} has no spatial grid (shape {shape}), "
                              "so no Gram matrix to match; choose a convolutional layer")
    stride = net.stride_of(config.layers)
    if min(w, h) < stride:
        raise ConfigError(f"--size {w} {h} is too small for the deepest layer: each side needs at least "
                          f"{stride} px; use a larger --size or shallower --layers")
    src = images.resize_long_side(source, config.source_size)
    if min(src.size) < stride:
        what = f"source texture {label}" if label else "source texture"
        raise ImageError(f"{what} ({source.width}x{source.height}) is too small or "
                         f"elongated: at --source-size {config.source_size} its short side is under the "
                         f"{stride} px the deepest layer needs; use a larger --source-size or shallower "
                         "--layers")

    start = time.perf_counter()
    s = images.pil_to_tensor(src, device=device)
    # The source's Grams are measured in float32 (outside autocast), the image in config.precision:
    # under bf16 on a copy whose weights are cast once (nets.cast_for), not by autocast every pass.
    image_net = circular_net(net) if config.tileable else net
    image_net = cast_for(image_net, precision, copy_net=image_net is net)
    objective = TextureObjective(net, s, config, None if image_net is net else image_net)
    # White noise in [0, 1], drawn on the CPU so a seed gives the same start on every device.
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    x0 = torch.rand((1, 3, h, w), generator=gen).to(device)

    n = config.iterations
    marks = {1: "first", max(1, n // 2): "middle", n: "last"}
    snapshots: list[tuple[str, Image.Image]] = []

    def on_progress(p: Progress) -> None:
        if p.image is not None and p.iteration in marks:
            snapshots.append((f"{marks[p.iteration]}: iteration {p.iteration}", images.tensor_to_pil(p.image)))
        if callback is not None:
            if p.image is not None and not (config.save_every and p.iteration % config.save_every == 0):
                p = replace(p, image=None)  # only the caller's own requests carry images
            callback(p)

    def want(i: int) -> bool:
        return i in marks or bool(config.save_every and i % config.save_every == 0)

    try:
        # Each report is a host sync: every iteration only when a caller listens.
        result = _optimize(x0, objective, config, on_progress, want, start, callback is not None)
    except Interrupted as stop:
        raise Interrupted(_finish(stop.best_image, s.cpu(), config), stop.iteration) from None
    out = _finish(result.best_image, s, config)
    return TextureResult(images.tensor_to_pil(out), config, [row["gram"] for row in result.history],
                         result.history, result.best_terms, result.best_terms["gram"],
                         time.perf_counter() - start, src, snapshots, result.graphed)


def _warmup(config: TextureConfig) -> int:
    """The Adam iterations before L-BFGS (at least one L-BFGS iteration is left); none for the others."""
    return min(config.warmup, config.iterations - 1) if config.optimizer == "lbfgs" else 0


def _optimize(x0: torch.Tensor, objective: TextureObjective, config: TextureConfig,
              on_progress: Callable[[Progress], None], want: Callable[[int], bool], start: float,
              report_all: bool) -> OptimizeResult:
    """optimize_image, with `warmup` Adam iterations first when the optimizer is L-BFGS.

    Deviation from the paper (scipy's L-BFGS-B, with a line search): our L-BFGS takes fixed steps
    without a line search, and at a white-noise start the Gram loss often has negative curvature
    (too little contrast: G < target, like (x² - a)² near 0). Every curvature pair is then
    rejected and L-BFGS crawls along tiny safe steps (measured: -3% in 40 iterations on a
    high-contrast check pattern). A few Adam steps reach the convex region (-99.5% in 40).
    Iterations are numbered across both phases, as one run.
    """
    n, warm = config.iterations, _warmup(config)
    phases = [("adam", warm, None), (config.optimizer, n - warm, config.lr)]
    x, history, offset, result = x0, [], 0, None
    for optimizer, iters, lr in phases:
        if iters <= 0:
            continue

        def shifted(p: Progress, offset=offset) -> None:
            on_progress(replace(p, iteration=p.iteration + offset, iterations=n))

        try:
            result = optimize_image(
                x, objective, iterations=iters, optimizer=optimizer, lr=lr, lbfgs_history=config.lbfgs_history,
                precision=config.precision, cuda_graph=config.cuda_graph, callback=shifted,
                want_image=lambda i, offset=offset: want(i + offset),
                report_at=None if report_all else (lambda i, offset=offset: want(i + offset)),
                clock_start=start)
        except Interrupted as stop:
            raise Interrupted(stop.best_image, stop.iteration + offset) from None
        history += result.history
        x, offset = result.best_image, offset + iters
    # The L-BFGS phase starts by evaluating the warm-up's best image, so its best is the overall best.
    return replace(result, history=history)


def _finish(x: torch.Tensor, source: torch.Tensor, config: TextureConfig) -> torch.Tensor:
    """Clamp, and optionally give the result exactly the source's colour histogram."""
    x = x.to(source.device).clamp(0, 1)
    if config.match_histogram:
        x = images.match_histogram(x, source)
    return x

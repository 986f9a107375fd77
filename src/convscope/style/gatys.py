"""Optimization-based neural style transfer (Gatys, Ecker & Bethge 2015/2016).

The image is optimized so its deep features match the content image's (content loss) and its
feature correlations (Gram matrices) match the style images' (style loss), with a total-variation
prior. Engine only: images in, images and figures of merit out, progress through a callback.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
from PIL import Image
from torch.nn import functional as F

from .. import images
from ..devices import check_fits, default_precision, resolve_device
from ..argcheck import as_image, callback_or_none, config_of
from ..errors import ConfigError, ImageError
from ..losses import content_loss, gram, range_penalty, style_loss, tv_loss
from ..nets import Backbone, cast_for, get_net
from ..optimize import (DEFAULT_LR, WARM_START_FIRST_STEP, Interrupted, Progress, optimize_image,
                        optimizer_state_bytes, precision_mode)
from .config import INITS, StyleConfig, check_layer_weights, fast_init_model


@dataclass
class StyleResult:
    image: Image.Image                       # the stylized image (RGB)
    config: StyleConfig                      # as run (resolved device and precision)
    losses: dict[str, float]                 # weighted terms and total of the returned (best) image
    history: list[dict[str, float]]          # per iteration, all stages
    seconds: float
    stage_sizes: list[tuple[int, int]]       # (width, height) per stage
    snapshots: list[tuple[str, Image.Image]] = field(default_factory=list)  # first / middle / last
    graphed: bool = False


class StyleObjective:
    """Weighted content + style + TV terms for one stage; targets are computed once, at init.

    Style targets of several style images are blended as a weighted sum of their Gram matrices,
    so the cost per iteration does not grow with the number of styles.
    """

    def __init__(self, net: Backbone, content: torch.Tensor, styles: Sequence[torch.Tensor],
                 blend: Sequence[float], config: StyleConfig):
        self.net, self.config = net, config
        self.content_layers, self.style_layers = config.layers()
        self.layer_weights = config.layer_weights()
        self.layers = list(dict.fromkeys(self.content_layers + self.style_layers))
        with torch.no_grad():
            feats = net.features(content, self.content_layers)
            self.content_targets = {n: feats[n].detach().float().clone() for n in self.content_layers}
            self.gram_targets = {n: 0.0 for n in self.style_layers}
            for style, w in zip(styles, blend):
                feats = net.features(style, self.style_layers)
                for n in self.style_layers:
                    self.gram_targets[n] = self.gram_targets[n] + w * gram(feats[n].float(), config.style_norm)
        # Per-layer factors: "relative" divides each layer's error by its target's mean square
        # (computed here once, so the objective stays a fixed weighted sum).
        relative = config.style_norm == "relative"
        self.content_scale = {n: 1.0 / float(t.pow(2).mean().clamp_min(1e-12)) if relative else 1.0
                              for n, t in self.content_targets.items()}
        self.style_scale = {n: 1.0 / float(g.pow(2).mean().clamp_min(1e-12)) if relative else 1.0
                            for n, g in self.gram_targets.items()}

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        feats = self.net.features(x, self.layers)
        terms = {}
        if self.content_layers:
            loss = sum(self.content_scale[n] * content_loss(feats[n].float(), self.content_targets[n])
                       for n in self.content_layers)
            terms["content"] = c.content_weight * loss / len(self.content_layers)
        if self.style_layers:
            loss = sum(w * self.style_scale[n] * style_loss(feats[n].float(), self.gram_targets[n], c.style_norm)
                       for n, w in zip(self.style_layers, self.layer_weights))
            terms["style"] = c.style_weight * loss
        terms["tv"] = c.tv_weight * tv_loss(x.float(), c.tv_kind)
        if c.range_weight:
            terms["range"] = c.range_weight * range_penalty(x.float())
        return terms


def _luminance(x: torch.Tensor) -> torch.Tensor:
    """Y of YIQ, replicated to 3 channels: the grey image luminance-only transfer works on."""
    return images.rgb_to_yiq(x)[:, :1].expand(-1, 3, -1, -1).contiguous()


def _match_luminance(style_y: torch.Tensor, content_y: torch.Tensor) -> torch.Tensor:
    """Shift and scale the style's luminance to the content's mean and std (Gatys et al. 2016, sec. 3)."""
    s_mean, s_std = style_y.mean(), style_y.std().clamp_min(1e-6)
    return ((style_y - s_mean) / s_std * content_y.std() + content_y.mean()).clamp(0, 1)


def _init_image(config: StyleConfig, content: torch.Tensor, style: torch.Tensor,
                init_image: Image.Image | None) -> torch.Tensor:
    _, _, h, w = content.shape
    if config.init == "content":
        return content.clone()
    if config.init == "noise":
        gen = torch.Generator(device="cpu").manual_seed(config.seed)
        return torch.rand(content.shape, generator=gen).to(content.device)
    if config.init == "style":
        return F.interpolate(style, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
    # An image file, resized to the output's exact size.
    assert init_image is not None
    return images.pil_to_tensor(init_image.resize((w, h), Image.Resampling.LANCZOS), device=content.device)


ImageArg = Image.Image | str | os.PathLike | torch.Tensor  # what the API takes as an image


def stylize_images(content: ImageArg, styles: ImageArg | Sequence[ImageArg], config: StyleConfig | None = None,
                   callback: Callable[[Progress], None] | None = None,
                   init_image: Image.Image | None = None,
                   labels: Sequence[str] | None = None) -> StyleResult:
    """Stylize `content` with `styles` (one image or a list of them): PIL images (any mode), image
    file paths or float tensors [1, 3, H, W] in [0, 1], as `convscope.stylize` takes them.

    Runs one stage per scale in config.stage_sizes(), coarse to fine, each starting from the
    previous result upsampled. Progress records carry an image every `save_every` iterations.
    `labels` (content first, then styles; e.g. file names) name the images in error messages.
    Raises Interrupted (with the best image so far) on Ctrl-C and UserError subclasses on bad input.
    """
    config = config_of(StyleConfig() if config is None else config, StyleConfig).validate()
    if not isinstance(styles, (list, tuple)):
        styles = [styles]  # one style: a path, an image or a tensor
    if not styles:
        raise ConfigError("give at least one style image")
    callback_or_none(callback, "Progress")
    if labels is None:  # file names, where given, name the images in messages
        labels = [str(x) if isinstance(x, (str, os.PathLike)) else "" for x in (content, *styles)]
    content = as_image(content, "content")
    styles = [as_image(s, f"style image {i}") for i, s in enumerate(styles, start=1)]
    blend = config.blend(len(styles))
    fast_model = fast_init_model(config.init)
    if config.init not in INITS and fast_model is None and init_image is None:
        init_image = images.load_image(config.init)
    device = resolve_device(config.device)
    if min(content.size) > 0:  # (an empty image is refused below, by name)
        w, h = images.long_side_size(content.size, config.size)
        check_fits(w * h, device, f"stylizing at {w}x{h}", "--size", state_bytes=optimizer_state_bytes(
            config.optimizer, 3 * w * h, config.stage_iterations()[-1], config.lbfgs_history))
    precision = default_precision(device) if config.precision == "auto" else config.precision
    # NHWC is the layout cuDNN's tensor-core kernels and oneDNN's bf16 kernels want (measured: ~5%
    # per iteration on an H100; on CPU it is what makes bf16 pay off).
    net = get_net(config.net, config.pooling, device).use_channels_last(device.type in ("cuda", "cpu"))
    net = cast_for(net, precision)  # what autocast would cast each iteration, cast once
    content_layers, style_layers = preset_layers(net, config)
    check_layer_weights(config.style_layer_weights, style_layers)  # (a net's own blocks: counted only now)
    # The config saved with the output says what ran: the preset's layers and the optimizer's step size.
    config = replace(config, device=str(device), precision=precision, content_layers=content_layers,
                     style_layers=style_layers, lr=DEFAULT_LR[config.optimizer] if config.lr is None else config.lr)
    for name in content_layers + style_layers:
        net.resolve(name)  # unknown names fail here, before any work
    min_side = net.stride_of(content_layers + style_layers)
    labels = list(labels or [])
    labels += [""] * (1 + len(styles) - len(labels))
    _check_side(content, config.size, min_side, f"content image {labels[0]}".strip())
    for i, (im, label) in enumerate(zip(styles, labels[1:]), start=1):
        _check_side(im, _style_long_side(config, config.size), min_side,
                    f"style image {label or i}")

    start = time.perf_counter()
    sizes, iters = _usable_stages(config, content, styles, min_side)
    if fast_model is not None and init_image is None:
        from ..fast.apply import one_pass_image  # the one-pass engines load only when asked for

        init_image = one_pass_image(fast_model, content, styles, blend, sizes[0], str(device), config.preserve_color,
                                    labels)
    history: list[dict[str, float]] = []
    snapshots: list[tuple[str, Image.Image]] = []
    stage_sizes: list[tuple[int, int]] = []
    x = None
    graphed = False
    try:
        for k, (size, n_iter) in enumerate(zip(sizes, iters), start=1):
            c, c_target, s = _stage_inputs(content, styles, size, config, device)
            stage_sizes.append((c.shape[-1], c.shape[-2]))
            with precision_mode(precision, device):  # targets in the arithmetic the iterates will use
                objective = StyleObjective(net, c_target, s, blend, config)
            first_step = None  # torch's rule for L-BFGS's first step, except from an image near a solution
            if x is None:
                x0 = _init_image(config, c_target, s[0], init_image)
                if config.preserve_color == "luminance":
                    x0 = _luminance(x0)
                if config.init not in INITS:  # a one-pass stylization (--init fast) or an image file
                    first_step = WARM_START_FIRST_STEP
            else:
                x0 = F.interpolate(x, size=c.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
            last_stage = k == len(sizes)
            marks = {1: "first"} if k == 1 else {}
            if last_stage:  # a tiny last stage keeps "first" rather than relabel it
                marks = {max(1, n_iter // 2): "middle", n_iter: "last", **marks}

            def on_progress(p: Progress, marks=marks) -> None:
                if p.image is not None and p.iteration in marks:
                    snapshots.append((f"{marks[p.iteration]}: iteration {p.iteration}"
                                      + (f", {p.image.shape[-1]}x{p.image.shape[-2]}" if len(sizes) > 1 else ""),
                                      images.tensor_to_pil(p.image)))
                if callback is not None:
                    every = config.save_every
                    if p.image is not None and not (every and p.iteration % every == 0) and p.iteration != p.iterations:
                        p = replace(p, image=None)  # only the caller's own requests carry images
                    callback(p)

            def want(i: int, marks=marks) -> bool:
                return i in marks or bool(config.save_every and i % config.save_every == 0)

            try:
                result = optimize_image(
                    x0, objective, iterations=n_iter, optimizer=config.optimizer, lr=config.lr,
                    lr_decay=config.lr_decay, lbfgs_history=config.lbfgs_history, lbfgs_first_step=first_step,
                    precision=precision, cuda_graph=config.cuda_graph, callback=on_progress, want_image=want,
                    report_at=None if callback is not None else want,
                    stage=k, stages=len(sizes), clock_start=start)
            except Interrupted as stop:
                raise _interrupted(stop.best_image, stop.iteration, k, content, sizes[-1], config) from None
            history += result.history
            graphed = graphed or result.graphed
            x = result.best_image
    except KeyboardInterrupt:
        # Ctrl-C outside the optimizer (building targets, between stages): keep the last stage's result.
        if x is None:
            raise
        raise _interrupted(x, 0, len(stage_sizes), content, sizes[-1], config) from None
    final = result.best_terms  # the losses of the image we return (before any colour step)
    out = _finish(x, c, config)
    return StyleResult(images.tensor_to_pil(out), config, final, history, time.perf_counter() - start,
                       stage_sizes, snapshots, graphed)


# The presets name VGG layers. On other nets (EfficientNet, torchvision models, classifier runs) style
# comes from the first five block outputs, as in texture synthesis, and content from the block at the
# preset's depth among them: the last (gatys: block5_conv2), the fourth (classic: conv4_2) or the
# second (johnson: block2_conv2).
PRESET_CONTENT_BLOCK = {"gatys": 4, "classic": 3, "johnson": 1}


def preset_layers(net, config: StyleConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(content layers, style layers) for `net`: the ones given, else the preset's (on VGG) or their
    counterparts among the net's block outputs (on other nets)."""
    content, style = config.layers()
    if isinstance(net, Backbone) or (config.content_layers and config.style_layers):
        return content, style
    blocks = tuple(net.block_outputs()[:5])
    if not blocks:
        raise ConfigError(f"{net.net_name} has no convolutional blocks to take style from; give --content-layers "
                          f"and --style-layers (convscope layers --net {net.net_name} lists them)")
    if not config.content_layers:
        content = (blocks[min(PRESET_CONTENT_BLOCK[config.preset], len(blocks) - 1)],)
    return content, style if config.style_layers else blocks


def _style_long_side(config: StyleConfig, size: int) -> int:
    return max(16, round(config.style_scale * size))


def _usable_stages(config: StyleConfig, content: Image.Image, styles: Sequence[Image.Image],
                   min_side: int) -> tuple[list[int], list[int]]:
    """Stage sizes and iterations, without coarse stages where an input would be too thin for the
    deepest layer (the finest stage always runs; its inputs were checked up front)."""
    sizes = config.stage_sizes()
    kept = [size for k, size in enumerate(sizes) if k == len(sizes) - 1 or (
        _short_side(content, size) >= min_side
        and all(_short_side(im, _style_long_side(config, size)) >= min_side for im in styles))]
    return kept, config.stage_iterations(len(kept))


def _stage_inputs(content: Image.Image, styles: Sequence[Image.Image], size: int, config: StyleConfig,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """(content, content as the objective sees it, styles) as tensors for one stage.

    Colour preservation happens here: "histogram" maps each style's colours onto the content's;
    "luminance" hands the objective grey luminance images, the styles' matched to the content's
    luminance mean and spread (Gatys et al. 2016, "Preserving colour", sec. 3).
    """
    c = images.pil_to_tensor(images.resize_long_side(content, size), device=device)
    long_side = _style_long_side(config, size)
    s = [images.pil_to_tensor(images.resize_long_side(im, long_side), device=device) for im in styles]
    if config.preserve_color == "histogram":
        s = [images.match_histogram(t, c) for t in s]
    if config.preserve_color == "luminance":
        c_target = _luminance(c)
        return c, c_target, [_match_luminance(_luminance(t), c_target) for t in s]
    return c, c, s


def _interrupted(best: torch.Tensor, iteration: int, stage: int, content: Image.Image, final_long: int,
                 config: StyleConfig) -> Interrupted:
    """Interrupted carrying the best image at the size asked for (a coarse stage's is upsampled, as
    the next stage would), colour-finished, with the stage and the resolved config."""
    c = images.pil_to_tensor(images.resize_long_side(content, final_long), device=best.device)
    if best.shape[-2:] != c.shape[-2:]:
        best = F.interpolate(best, size=c.shape[-2:], mode="bicubic", align_corners=False)
    return Interrupted(_finish(best, c, config).cpu(), iteration, stage, config)


def _short_side(image: Image.Image, long_side: int) -> int:
    w, h = image.size
    return max(1, round(min(w, h) * long_side / max(w, h)))


def _check_side(image: Image.Image, long_side: int, min_side: int, what: str) -> None:
    """The image resized to `long_side` must keep `min_side` px on its short side for the layers used."""
    if min(image.size) < 1:
        raise ImageError(f"{what} is empty ({image.width}x{image.height} pixels)")
    if _short_side(image, long_side) < min_side:
        w, h = image.size
        raise ConfigError(f"{what} ({w}x{h}) is too elongated or small: at {long_side} px on its long side "
                          f"its short side is under the {min_side} px the deepest layer needs; use a "
                          "larger --size (or --style-scale) or shallower layers")


def _finish(x: torch.Tensor, content: torch.Tensor, config: StyleConfig) -> torch.Tensor:
    """Clamp, and for luminance-only transfer put the content's chroma back."""
    x = x.to(content.device).clamp(0, 1)
    if config.preserve_color == "luminance":
        x = images.luminance_transfer(x, content)
    return x

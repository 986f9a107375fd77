"""Feature inversion: reconstruct an image from one layer's representation.

Mahendran & Vedaldi, "Understanding deep image representations by inverting them" (CVPR 2015).
Starting from noise, find x minimizing

    ||phi(x) - phi0||² / ||phi0||²  +  lambda_alpha R_alpha(x)  +  lambda_V R_V^beta(x)

where phi0 = phi(x0) is the representation of the original image at one named layer. The
normalized error ||phi(x) - phi0||² / ||phi0||² is the paper's figure of merit (0 = the same
representation, 1 = as far as the zero vector).

Scaling of the regularizers (paper, sec. 3.3 "Balancing the different terms"), as implemented:
- The regularizers see the image in the paper's units: mean-subtracted 0..255 pixels
  (x~ = 255 x - ImageNet mean, for every net), divided by B = 80, the typical Euclidean norm of a
  pixel (its RGB vector) of a mean-subtracted natural image. So z = x~ / B has pixels of norm ~1.
- R_alpha(x) = ||x~||_alpha^alpha is divided by H W B+^alpha with B+ = 2B, the bound of the
  paper's journal version (IJCV 2016), i.e. our term is mean over pixels of sum over channels
  |z B/B+|^alpha. Deviation from the CVPR text's H W B^alpha: with B itself a saturated colour
  costs ~20x a typical pixel and the prior alone held relu1_2's error at ~0.19 on smooth colour
  blobs (measured); with B+ it is ~0.02. alpha = 6 keeps pixels within a range without bending
  them inside it.
- R_V^beta(x) = sum over pixels and channels of (dx² + dy²)^(beta/2) is divided by H W V^beta
  with V = B / 6.5 the typical size of a finite difference (paper: "V = B/6.5"); computed with
  losses.tv_loss(kind="beta") on z·6.5, times the 3 channels (tv_loss averages over channels,
  the paper sums over them).
- The representation term needs no sigma rescaling phi(sigma x): the image we optimize is the
  [0, 1] RGB image and the net's own preprocessing maps it to the units its weights expect.
Deviations: the paper's weights (lambda_V from 0.5 to 50, growing with depth, in its own units and
gradient descent with momentum for thousands of steps) were chosen for AlexNet; ours are our own
calibration for VGG + L-BFGS in the normalized units above (see TV_BY_STRIDE), at the same
beta = 2 the paper uses for its CNN figures. The reported error is measured in float32 on the
returned (clamped, [0, 1]) image, whatever precision the optimization ran in.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from PIL import Image

from .. import images
from ..argcheck import as_image, callback_or_none, config_of
from ..devices import check_fits, default_precision, resolve_device
from ..errors import ConfigError
from ..losses import tv_loss
from ..nets import Backbone, cast_for, get_net, natural_side, pick_layer
from ..nets.memory import bytes_per_pixel
from ..optimize import Interrupted, Progress, optimize_image, optimizer_state_bytes, precision_mode
from .configs import InvertConfig

# ImageNet mean, RGB, 0..255 pixel units (the Caffe VGG mean): the paper's mean-subtracted images.
IMAGENET_MEAN_255 = (123.68, 116.779, 103.939)
DEFAULT_SIZE = 224           # long side in px unless --size (or a run's smaller input size)
B_PIXEL_NORM = 80.0          # typical Euclidean norm of a mean-subtracted pixel (paper, sec. 3.3)
B_PLUS = 2 * B_PIXEL_NORM    # bound of the alpha-norm prior, B+ = 2B (the paper's IJCV 2016 version)
V_EDGE_RATIO = 6.5           # typical finite difference V = B / 6.5 (paper, sec. 3.3)
VGG_LAYER, AUTO_DEPTH = "relu3_1", 0.4  # --layer auto on the VGG nets and on others
# Default lambda_V by the layer's stride (input pixels per feature pixel): deeper layers keep less
# of the image, so the prior must fill in more, as in the paper's 3 depth groups (0.5 / 5 / 50 for
# AlexNet's conv1-2 / conv3-4 / conv5-fc8). Ours, chosen by eye on VGG19 + L-BFGS at 224 px
# (tubingen.jpg): relu1_x keeps errors ~0.01-0.02 and faithful colours; relu3_1 at 0.05 stays
# sharp (error ~0.09), 0.2 washes colours out; relu5_1 at 0.3 shows the scene (error ~0.15), 1.5 a fog.
TV_BY_STRIDE = ((2, 0.01), (8, 0.05), (math.inf, 0.3))


@dataclass
class InvertResult:
    layer: str                            # as asked for
    image: Image.Image                    # the reconstruction (RGB, the original's resized size)
    original: Image.Image                 # the original as the net saw it (resized)
    error: float                          # ||phi(x) - phi0||² / ||phi0||² of `image`, float32
    tv_weight: float                      # lambda_V used (the depth default resolved)
    losses: dict[str, float]              # the best iterate's weighted terms and "loss"
    history: list[dict[str, float]]       # per iteration
    seconds: float                        # this layer's inversion alone
    config: InvertConfig                  # as run (device and precision resolved)


class InversionObjective:
    """The paper's objective for one layer; phi0 and its squared norm are computed once, in float32.

    `image_net` evaluates the optimized image (by default `net`, which measures phi0 and `error`):
    under bf16, a copy of `net` with its weights cast once (nets.cast_for).
    """

    def __init__(self, net: Backbone, original: torch.Tensor, layer: str, config: InvertConfig,
                 tv_weight: float, image_net: Backbone | None = None):
        self.net, self.layer, self.config, self.tv_weight = net, layer, config, tv_weight
        self.image_net = image_net or net
        with torch.no_grad():
            self.target = net.features(original, [layer])[layer].detach().float().clone()
        # A layer that is all zero for this image (a dead ReLU map) has nothing to invert.
        self.target_sq = float(self.target.pow(2).sum())
        if not self.target_sq > 0:
            raise ConfigError(f"layer {layer!r} is all zero for this image: nothing to invert; "
                              "choose another layer")
        self.mean = torch.tensor(IMAGENET_MEAN_255, device=original.device).view(1, 3, 1, 1)

    def error(self, x: torch.Tensor, net: Backbone | None = None) -> torch.Tensor:
        """Normalized representation error of x [1, 3, H, W] (a 0-dim tensor), measured by `net`
        (default: the float32 net that measured phi0)."""
        phi = (net or self.net).features(x, [self.layer])[self.layer].float()
        return (phi - self.target).pow(2).sum() / self.target_sq

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        terms = {"representation": self.error(x, self.image_net)}
        z = (x.float() * 255.0 - self.mean) / B_PIXEL_NORM   # pixels of typical norm ~1
        if c.alpha_weight:
            terms["alpha"] = c.alpha_weight * (z * (B_PIXEL_NORM / B_PLUS)).abs().pow(c.alpha).sum(1).mean()
        if self.tv_weight:
            terms["tv"] = self.tv_weight * 3.0 * tv_loss(z * V_EDGE_RATIO, "beta", c.beta)
        return terms


def default_tv_weight(net: Backbone, layer: str) -> float:
    stride = net.stride_of([layer])
    return next(w for limit, w in TV_BY_STRIDE if stride <= limit)


def start_image(shape: Sequence[int], seed: int, device: torch.device) -> torch.Tensor:
    """Noise around the mean colour with the typical pixel norm B (the paper starts from noise)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(tuple(shape), generator=gen) * (B_PIXEL_NORM / math.sqrt(3))
    mean = torch.tensor(IMAGENET_MEAN_255).view(1, 3, 1, 1)
    return ((noise + mean) / 255.0).clamp(0, 1).to(device)


def invert(image: Image.Image, config: InvertConfig | None = None,
           callback: Callable[[Progress], None] | None = None) -> list[InvertResult]:
    """Reconstruct `image` (a PIL image, a path or a float tensor [1, 3, H, W]) from each layer in
    config.layer_list(); one result per layer.

    Progress records carry stage = the layer's index (1-based) and stages = the number of layers,
    and an image every `save_every` iterations. Raises Interrupted (with the best image of the
    layer being inverted, and in `results` the finished layers' results plus that one's) on Ctrl-C
    and UserError subclasses on bad input.
    """
    image = as_image(image, "the image")
    config = config_of(InvertConfig() if config is None else config, InvertConfig).validate()
    callback_or_none(callback, "Progress")
    device = resolve_device(config.device)
    precision = default_precision(device) if config.precision == "auto" else config.precision
    config = replace(config, device=str(device), precision=precision)
    net = get_net(config.net, config.pooling, device).use_channels_last(device.type in ("cuda", "cpu"))
    config = replace(config, size=config.size or natural_side(net, DEFAULT_SIZE))
    if config.layers is None:  # with --layers, --layer is unused and stays "auto" in the sidecar
        config = replace(config, layer=pick_layer(net, config.layer, VGG_LAYER, AUTO_DEPTH))
    layers = config.layer_list()
    seen: dict[str, str] = {}
    for name in layers:
        canonical = net.resolve(name)  # unknown names fail here, before any work
        if canonical in seen:  # (relu1_1 block1_conv1: the same layer inverted twice)
            raise ConfigError(f"--layers names one layer twice: {seen[canonical]} and {name} are both "
                              f"{net.display_name(canonical)}; each layer once")
        seen[canonical] = name
    resized = images.resize_long_side(image, config.size)
    min_side = net.stride_of(layers)
    if min(resized.size) < min_side:
        raise ConfigError(f"the image at {config.size} px on its long side is {resized.width}x{resized.height}, "
                          f"under the {min_side} px layer {layers[-1]!r} needs; use a larger --size")
    original = images.pil_to_tensor(resized, device=device)
    start = time.perf_counter()
    # phi0 and the reported errors in float32 (outside autocast) on `net`; the iterations in
    # `precision`, under bf16 on a copy whose weights are cast once, not by autocast every pass.
    image_net = cast_for(net, precision, copy_net=True)
    # Before any work: invert --size 4096 allocated 7 GB, then failed on L-BFGS's 30 GB after a minute.
    w, h = resized.size
    with precision_mode(precision, device):
        per_pixel = bytes_per_pixel(image_net, layers, backward=True)
    check_fits(w * h, device, f"inverting at {w}x{h}", "--size", per_pixel,
               optimizer_state_bytes(config.optimizer, 3 * w * h, config.iterations))
    results = []
    for k, layer in enumerate(layers, start=1):
        tv_weight = config.tv_weight if config.tv_weight is not None else default_tv_weight(net, layer)
        objective = InversionObjective(net, original, layer, config, tv_weight, image_net)
        x0 = start_image(original.shape, config.seed, device)
        every = config.save_every
        layer_start = time.perf_counter()

        def want(i: int) -> bool:
            return bool(every and i % every == 0)

        try:
            run = optimize_image(x0, objective, iterations=config.iterations, optimizer=config.optimizer,
                                 lr=config.lr, precision=precision, callback=callback, want_image=want,
                                 report_at=None if callback is not None else want,
                                 stage=k, stages=len(layers), clock_start=start)
        except Interrupted as stop:
            # The layers done and this one as far as it got, for a caller that shows them all.
            with torch.no_grad():
                error = float(objective.error(stop.best_image.to(device)))
            stop.results = [*results, InvertResult(layer, images.tensor_to_pil(stop.best_image), resized, error,
                                                   tv_weight, {}, [], time.perf_counter() - layer_start, config)]
            raise
        with torch.no_grad():
            error = float(objective.error(run.best_image))
        results.append(InvertResult(layer, images.tensor_to_pil(run.best_image), resized, error, tv_weight,
                                    run.best_terms, run.history, time.perf_counter() - layer_start, config))
    return results


def results_metadata(results: Sequence[InvertResult], inputs: dict) -> dict:
    """What a reconstruction (one layer) or a strip (several) records (PNG text and .json sidecar):
    the config as run, `inputs` (how the caller names the image), per layer its error, TV weight,
    final loss terms and time; with one layer, its error at the top level too."""
    from ..runinfo import run_metadata

    per_layer = [{"layer": r.layer, "error": r.error, "tv_weight": r.tv_weight, "final_losses": r.losses,
                  "seconds": round(r.seconds, 3)} for r in results]
    return run_metadata("invert", results[0].config.to_dict(), inputs=inputs, seed=results[0].config.seed,
                        **({"error": results[0].error} if len(results) == 1 else {}), layers=per_layer,
                        size=list(results[0].image.size), seconds=round(sum(r.seconds for r in results), 3))


def strip_figure(results: Sequence[InvertResult], title: str = "") -> Image.Image:
    """The original and each reconstruction side by side, labelled with layer name and error."""
    from ..figures import image_strip

    panels = [("original", results[0].original)]
    panels += [(f"{r.layer}: error {r.error:.3g}", r.image) for r in results]
    return image_strip(panels, title)


__all__ = ["InvertConfig", "InvertResult", "InversionObjective", "Interrupted", "invert", "results_metadata",
           "strip_figure"]

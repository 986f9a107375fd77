"""DeepDream (Mordvintsev, Olah & Tyka 2015, "Inceptionism: Going Deeper into Neural Networks").

Gradient ASCENT on the image itself, so that what a layer (or one of its channels) already sees in
it is amplified. The classic recipe: octaves (small to large) with detail reinjection, random
jitter each step, steps normalized by the gradient's mean magnitude, and a tiled gradient so big
images run in bounded memory. The original used GoogLeNet; we use the project's VGG backbones.
Engine only: images in, images and figures of merit out, progress through a callback.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from PIL import Image

from .. import images
from ..argcheck import as_image, callback_or_none, config_of, whole_number
from ..devices import default_precision, resolve_device
from ..errors import ConfigError, ImageError, NumericalError
from ..nets import cast_for, flat_shape, get_net, pick_layer
from ..optimize import Interrupted, Progress, precision_mode
from .configs import DREAM_MAX_SIDE as MAX_SIDE
from .configs import DreamConfig

VGG_LAYER, AUTO_DEPTH = "relu4_3", 0.6  # the default layer (--layer auto) on VGG and on other nets
# The smallest octave keeps at least this many cells of the layer's grid on its short side: below
# that the layer sees mostly zero padding and dreams borders, not content.
MIN_CELLS = 4


@dataclass
class DreamResult:
    image: Image.Image                   # the dream, at the input resized to config.size
    config: DreamConfig                  # as run (resolved device and precision)
    history: list[dict[str, float]]      # per step: objective, octave
    objective: float                     # the objective of the returned image (no jitter)
    start_objective: float               # the objective of the input at the same size
    octave_sizes: list[tuple[int, int]]  # (width, height), smallest first
    seconds: float
    losses: dict[str, float] = field(default_factory=dict)  # for the summary line


class Dreamer:
    """The network, objective and jitter generator, shared by the dream and its zoom frames."""

    def __init__(self, config: DreamConfig, guide: Image.Image | None = None):
        config = config_of(config, DreamConfig).validate()
        device = resolve_device(config.device)
        precision = default_precision(device) if config.precision == "auto" else config.precision
        self.config = replace(config, device=str(device), precision=precision)
        self.device = device
        net = get_net(config.net, config.pooling, device).use_channels_last(device.type in ("cuda", "cpu"))
        self.net = cast_for(net, precision)  # every pass runs under precision_mode: cast once, not per pass
        config = replace(config, layer=pick_layer(self.net, config.layer, VGG_LAYER, AUTO_DEPTH))
        self.config = replace(self.config, layer=config.layer)
        self.layer = self.net.resolve(config.layer)  # "did you mean" for unknown names, before any work
        self.stride = self.net.stride_of([self.layer])
        channels = self.net.channels_of(self.layer)
        if config.channel is not None and config.channel >= channels:
            raise ConfigError(f"--channel {config.channel} is out of range: {config.layer} has {channels} "
                              f"channels (0 to {channels - 1})")
        if config.channel is not None and guide is not None:
            raise ConfigError("--channel and --guide are two different objectives; give one of them")
        shape = flat_shape(self.net, self.layer)
        if guide is not None and shape is not None:  # (an IndexError traceback)
            raise ConfigError(f"--guide matches the features at each position, and {config.layer} of "
                              f"{self.net.net_name} has none (shape {shape}): choose a convolutional --layer")
        self.gen = torch.Generator(device="cpu").manual_seed(config.seed)  # same jitter on every device
        self.guide = None
        if guide is not None:
            guide = as_image(guide, "the guide image")
            g = images.resize_long_side(guide, config.size)
            if min(g.size) < self.stride:
                raise ImageError(f"guide image ({guide.width}x{guide.height}) is too small or elongated for "
                                 f"{config.layer}: its short side needs at least {self.stride} px at --size")
            with torch.no_grad(), precision_mode(precision, device):
                f = self.net.features(images.pil_to_tensor(g, device=device), [self.layer])[self.layer]
            self.guide = f.float().flatten(2)[0]  # [C, positions]

    # ---- objective and gradient --------------------------------------------------------------
    def _value(self, f: torch.Tensor) -> torch.Tensor:
        """SUM over the layer's positions of a per-position score, so tiles add up exactly.

        layer: mean over channels of the squared activation (the classic L2 objective, whose
        gradient is the activation itself); channel: that channel's activation; guide: at each
        position, the largest dot product with any of the guide's feature vectors (the "guided
        dream" of the DeepDream notebook: amplify what looks most like some part of the guide).
        """
        f = f.float()
        if self.guide is not None:
            return (f.flatten(2)[0].t() @ self.guide).amax(dim=1).sum()
        if self.config.channel is not None:
            return f[:, self.config.channel].sum()
        return f.pow(2).mean(dim=1).sum()

    def gradient(self, x: torch.Tensor, tile: int | None = None) -> tuple[torch.Tensor, float]:
        """d(objective)/d(image) for x [1, 3, H, W], and the objective per layer position.

        Computed tile by tile (tiles `tile` px, or config.tile); each tile is a separate image with
        its own zero padding, so gradients differ from the whole image's only within a receptive
        field of a tile border, and the per-step jitter moves those borders around (as the
        DeepDream notebook does). Tile edges fall on multiples of the layer's stride, so each tile
        sees the same pooling grid as the whole image.
        """
        tile = tile or self.config.tile
        g, total, positions = torch.zeros_like(x), 0.0, 0
        for y0, y1 in _cuts(x.shape[-2], tile, self.stride):
            for x0, x1 in _cuts(x.shape[-1], tile, self.stride):
                t = x[..., y0:y1, x0:x1].detach().requires_grad_(True)
                with torch.enable_grad(), precision_mode(self.config.precision, self.device):
                    f = self.net.features(t, [self.layer])[self.layer]
                value = self._value(f)
                (g[..., y0:y1, x0:x1],) = torch.autograd.grad(value, t)
                total += float(value.detach())
                positions += f.shape[-2] * f.shape[-1]
        objective = total / max(positions, 1)
        if not math.isfinite(objective):
            raise NumericalError("the objective became NaN or infinite; lower --lr")
        return g, objective

    def measure(self, x: torch.Tensor) -> float:
        """The objective of x [1, 3, H, W] as the ascent sees it, without jitter."""
        return self.gradient(x)[1]

    def _ascend(self, x: torch.Tensor, steps: int, octave: int, octaves: int, history: list,
                callback, start: float, on_stop: Callable[[torch.Tensor], torch.Tensor],
                preview_every: int = 0) -> torch.Tensor:
        """`steps` normalized, jittered ascent steps on x [1, 3, H, W], clamped to [0, 1].
        Every `preview_every` steps and at the octave's last step, the Progress record carries
        on_stop(x) on the CPU (the dream so far at full size).

        Not optimize.optimize_image: that loop minimizes a fixed objective with L-BFGS/Adam and
        tracks a best image, while DeepDream's step is a different rule (a fresh random shift every
        step, so the objective changes each step; the step normalized by mean |g|; no "best" image:
        the last is the dream). Progress still goes out as optimize.Progress records, so the CLI's
        progress bar and callbacks work unchanged. loss = -objective (Progress's loss is minimized).
        """
        j = self.config.jitter
        done = 0
        try:  # Ctrl-C in a step or in the callback (the progress bar) keeps the dream so far
            for i in range(1, steps + 1):
                dy, dx = (torch.randint(-j, j + 1, (2,), generator=self.gen).tolist() if j else (0, 0))
                g, value = self.gradient(torch.roll(x, (dy, dx), dims=(2, 3)))
                g = torch.roll(g, (-dy, -dx), dims=(2, 3))
                x = (x + self.config.lr * g / g.abs().mean().clamp_min(1e-12)).clamp(0, 1)
                done = i
                history.append({"objective": value, "octave": octave})
                if callback is not None:
                    shown = preview_every and (i % preview_every == 0 or i == steps)
                    callback(Progress(i, steps, -value, {"objective": value}, time.perf_counter() - start,
                                      octave, octaves, on_stop(x).detach().cpu() if shown else None))
        except KeyboardInterrupt:
            raise Interrupted(on_stop(x).cpu(), done, octave) from None
        return x

    # ---- the dream -----------------------------------------------------------------------------
    def octave_sizes(self, w: int, h: int) -> list[tuple[int, int]]:
        """(width, height) per octave, smallest first, without octaves whose short side would
        have under MIN_CELLS cells of the layer's grid (the full size always runs)."""
        sizes = []
        for k in range(self.config.octaves - 1, -1, -1):
            s = self.config.octave_scale ** k
            size = (max(1, round(w / s)), max(1, round(h / s)))
            if k == 0 or min(size) >= MIN_CELLS * self.stride:
                sizes.append(size)
        return sizes

    def run(self, image: Image.Image, callback: Callable[[Progress], None] | None = None,
            preview_every: int = 0) -> DreamResult:
        """Dream on `image` (PIL RGB) resized to config.size. Raises Interrupted on Ctrl-C with the
        dream so far at full size (the current octave's detail on the full-size image). With
        `preview_every` N > 0, every Nth step's Progress (and each octave's last) carries that
        full-size dream so far as `image` ([1, 3, H, W] on the CPU), for live previews."""
        c = self.config
        image = as_image(image, "the image")
        callback_or_none(callback, "Progress")
        whole_number(preview_every, "preview_every")
        if min(image.size) >= 1 and min(images.long_side_size(image.size, c.size)) < self.stride:
            # checked before resizing: a thin strip would round to 0 px there, with a vaguer message
            needed = images.long_side_for(image.size, self.stride)
            fix = f"use --size {needed} or more" if needed <= MAX_SIDE else "crop it"
            raise ImageError(f"image ({image.width}x{image.height}) is too small or elongated for {c.layer}: "
                             f"its short side needs at least {self.stride} px at --size {c.size}; {fix}, or use a "
                             "shallower --layer")
        img = images.resize_long_side(image, c.size)
        start = time.perf_counter()
        base = images.pil_to_tensor(img, device=self.device)
        sizes = self.octave_sizes(*img.size)
        history: list[dict[str, float]] = []
        start_objective = self.measure(base)
        detail = None
        for k, (w, h) in enumerate(sizes, 1):
            # The classic scheme: each octave starts from the original at its size plus the detail
            # the dream added at the previous (smaller) octave, upsampled.
            octave_base = _resize(base, h, w)
            detail = torch.zeros_like(octave_base) if detail is None else _resize(detail, h, w)
            x = (octave_base + detail).clamp(0, 1)

            def full(x, octave_base=octave_base):
                return (base + _resize(x - octave_base, *base.shape[-2:])).clamp(0, 1)

            x = self._ascend(x, c.steps, k, len(sizes), history, callback, start, full, preview_every)
            detail = x - octave_base
        x = x.detach()
        objective = self.measure(x)
        return DreamResult(images.tensor_to_pil(x), c, history, objective, start_objective, sizes,
                           time.perf_counter() - start, {"objective": objective, "start": start_objective})

    def zoom(self, start: Image.Image, count: int | None = None,
             callback: Callable[[Progress], None] | None = None) -> Iterator[Image.Image]:
        """The classic zoom-in sequence: per frame, crop the centre by config.zoom, resize back to
        the same size, then dream config.zoom_steps steps at one octave. Yields `count` frames."""
        c = self.config
        x = images.pil_to_tensor(as_image(start, "the start image"), device=self.device)
        callback_or_none(callback, "Progress")
        count = c.zoom_frames if count is None else whole_number(count, "count")
        h, w = x.shape[-2:]
        ch, cw = max(1, round(h / c.zoom)), max(1, round(w / c.zoom))
        top, left = (h - ch) // 2, (w - cw) // 2
        t0 = time.perf_counter()
        for n in range(1, count + 1):
            x = _resize(x[..., top:top + ch, left:left + cw], h, w)
            x = self._ascend(x, c.zoom_steps, n, count, [], callback, t0, lambda x: x)
            yield images.tensor_to_pil(x)


def dream(image: Image.Image, config: DreamConfig | None = None, guide: Image.Image | None = None,
          callback: Callable[[Progress], None] | None = None) -> DreamResult:
    """DeepDream on `image` (a PIL image, a path or a float tensor [1, 3, H, W]); see Dreamer.run."""
    config = config_of(DreamConfig() if config is None else config, DreamConfig)
    callback_or_none(callback, "Progress")
    return Dreamer(config, guide).run(image, callback)


def _cuts(n: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) spans covering 0..n in about equal parts of at most ~`tile`, starts on
    multiples of `stride`, each at least `stride` long (a shorter one is too small for the layer:
    --tile 32 --layer pool5 on a 48 px side left a 16 px sliver, and the run failed on it)."""
    k = max(1, min(math.ceil(n / tile), n // stride))
    edges = sorted({0, n, *(i * n // k // stride * stride for i in range(1, k))})
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def _resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bilinear resize of [1, 3, H, W] to (h, w); antialiased when shrinking."""
    if tuple(x.shape[-2:]) == (h, w):
        return x
    shrink = h < x.shape[-2] or w < x.shape[-1]
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)

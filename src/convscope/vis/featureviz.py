"""Feature visualization by activation maximization, and class visualization.

What does a channel of a layer respond to? Start from a near-grey image and follow the gradient of
that channel's mean activation (or of its centre neuron, or of a class logit) with respect to the
image. Plain gradient ascent on pixels finds high-frequency patterns that excite the network but
look like noise; the remedies used here are those of Olah, Mordvintsev & Schubert 2017 ("Feature
Visualization", Distill) and, for the pixel parameterization, of Yosinski et al. 2015
("Understanding Neural Networks Through Deep Visualization"): a Fourier or pixel parameterization
with decorrelated colour, random transforms every step, blur and decay (`imageprior` holds them).
Shifts are in pixels proportional to the image side, so a 32 px CIFAR net gets a 2 px jitter, not 8.

Class visualization (Simonyan et al. 2014, "Deep Inside Convolutional Networks") is the same
engine with a classifier's logit as the objective and a stronger prior (larger image, more steps,
several transformed copies per step). Every requested channel is one image of ONE batch, so 16
channels cost one batched forward/backward per step. Engine only: configs in, tensors, images and
figures of merit out; progress through a callback; `featureviz_sheet` draws the contact sheet.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from PIL import Image

from .. import images
from ..devices import check_fits, default_precision
from ..argcheck import callback_or_none, config_of
from ..errors import ConfigError, NumericalError
from ..nets import AUTO, LOGITS, Net, auto_layer, cast_for, flat_shape
from ..nets.classes import class_index, is_class_name
from ..nets.memory import bytes_per_pixel
from ..optimize import Interrupted, Progress, precision_mode
from ..options import _RANGE, parse_indices
from .configs import BLUR_EVERY, DEFAULT_CHANNELS, ClassVizConfig, FeatureVizConfig, RenderConfig
from .configs import FEATUREVIZ_AUTO_DEPTH as AUTO_DEPTH
from .imageprior import ImageParam, random_transform
from .loadnet import engine_net

KINDS = ("channel", "neuron", "class")
NEURON_NUDGE = 0.05     # --neuron: weight of the channel mean added while optimizing (see objective)
# The configs and their limits live in vis.configs (torch-free, for the CLI).


# ------------------------------------------------------------------------------ target parsing



def resolve_classes(spec: str, net: Net) -> list[int]:
    """Class indices for `spec`: indices and ranges as parse_indices, or class names (any case),
    comma-separated. ConfigError for a net without a classifier head, an index out of range, or an
    unknown name (with a "did you mean"); see nets.classes."""
    spec = str(spec).strip()
    parts = [spec] if is_class_name(net, spec) else [p.strip() for p in spec.split(",")]
    out: list[int] = []
    for part in parts:
        if _RANGE.match(part) and not is_class_name(net, part):
            class_index(net, "0")  # a headless net fails here, before the range is read
            found = parse_indices(part, "--class")
            for k in found:
                class_index(net, str(k))
        else:
            found = [class_index(net, part)]
        out += [k for k in found if k not in out]
    return out


def class_label(net: Net, k: int) -> str:
    return f"{k} {net.classes[k]}" if net.classes else str(k)


# -------------------------------------------------------------------------------------- results

@dataclass
class FeatureVizResult:
    images: torch.Tensor                 # [N, 3, S, S] in [0, 1], CPU: one per target, in order
    targets: list[int]                   # channel or class indices
    labels: list[str]                    # per panel: "#12" or "543 dumbbell"
    initial: list[float]                 # objective of the start image (no transform), per target
    final: list[float]                   # objective of the returned image (no transform), per target
    kind: str                            # channel | neuron | class
    layer: str                           # the layer's display name (logits for classes)
    config: RenderConfig                 # as run: layer, size, jitter, blur, device, precision resolved
    history: list[dict[str, float]] = field(default_factory=list)  # per step: activation (logit), stage
    seconds: float = 0.0
    probabilities: list[float] | None = None   # class kind: softmax probability of the target
    top5: list[list[tuple[int, float]]] | None = None  # class kind: the net's top-5 (index, prob)

    def image(self, i: int = 0) -> Image.Image:
        return images.tensor_to_pil(self.images[i])

    @property
    def losses(self) -> dict[str, float]:
        """For the CLI summary line: the objective's mean over the panels, at the start and the end."""
        what = "logit" if self.kind == "class" else "activation"
        return {f"start {what}": float(np.mean(self.initial)), what: float(np.mean(self.final))}


# ---------------------------------------------------------------------------------------- engine

class FeatureVisualizer:
    """Resolves a FeatureVizConfig or ClassVizConfig against its net (every check that needs the
    net happens here, before any optimization), then `run` renders.

    `net` reuses an already loaded net (the result then names it as its net, whatever config.net
    said); by default config.net is loaded.
    """

    def __init__(self, config: RenderConfig, net: Net | None = None):
        if not isinstance(config, RenderConfig):
            config_of(config, FeatureVizConfig, ClassVizConfig)
        config = config.validate()
        config, net, device, own = engine_net(config, net)
        self.device = device
        precision = default_precision(device) if config.precision == "auto" else config.precision
        # Every pass runs under precision_mode: bf16 weights cast once, not by autocast every pass
        # (on a copy of a caller's net, which stays as it was given).
        net = cast_for(net.use_channels_last(device.type in ("cuda", "cpu")), precision, copy_net=not own)
        self.net = net

        if isinstance(config, ClassVizConfig):
            kind, layer = "class", LOGITS
            targets = resolve_classes(config.target_class, net)
            if len(targets) != 1:
                raise ConfigError(f"classviz draws one class, not {len(targets)}; for a sheet of several use: "
                                  f"convscope featureviz --class {config.target_class}")
        elif config.target_class is not None:
            kind, layer = "class", LOGITS
            targets = resolve_classes(config.target_class, net)
        else:
            kind = "neuron" if config.neuron else "channel"
            layer = auto_layer(net, AUTO_DEPTH) if config.layer == AUTO else config.layer
            canonical = net.resolve(layer)  # "did you mean" for unknown names
            shape = flat_shape(net, canonical)  # (--neuron on logits: ignored, exit 0)
            if kind == "neuron" and shape is not None:
                raise ConfigError(f"--neuron maximizes a channel's centre position, and {layer} of {net.net_name} has "
                                  f"none (shape {shape}): drop --neuron or choose a convolutional layer")
            channels = net.channels_of(layer)
            if config.channels is None:
                targets = list(range(min(DEFAULT_CHANNELS, channels)))
            else:
                targets = parse_indices(config.channels)
                bad = [c for c in targets if c >= channels]
                if bad:
                    raise ConfigError(f"--channels {config.channels}: channel {bad[0]} is out of range, "
                                      f"{net.display_name(canonical)} has {channels} channels (0 to {channels - 1})")
        self.kind, self.layer, self.targets = kind, layer, targets
        self.term = "logit" if kind == "class" else "activation"  # the objective's name in progress
        self.display = net.display_name(net.resolve(layer))

        input_size = getattr(net, "input_size", 224)  # Backbones (VGG) have none: ImageNet
        size = config.size or config.default_size(input_size)
        stride = net.stride_of([layer])
        if size < stride:
            # Class logits have no shallower layer to fall back to (classviz has no --layer at all).
            fix = "a larger --size" if kind == "class" else "a larger --size or a shallower --layer"
            raise ConfigError(f"--size {size} is too small for {self.display} of {net.net_name}: it needs at "
                              f"least {stride} px; use {fix}")
        jitter = max(1, round(size / 16)) if config.jitter is None else config.jitter
        blur = config.default_blur(size) if config.blur is None else config.blur
        changes = {"size": size, "jitter": jitter, "blur": blur, "device": str(device), "precision": precision}
        if isinstance(config, FeatureVizConfig):
            changes["layer"] = layer if kind != "class" else LOGITS
        self.config = replace(config, **changes)
        # Before any work: --size 2048 with 16 channels needs 51 GB or more by this bound (about 60 GB
        # reckoned from peak memory at 128 and 256 px); the system kills a run it cannot hold.
        n = min(getattr(config, "batch", 1), len(targets)) * config.copies
        with precision_mode(precision, device):
            per_pixel = bytes_per_pixel(net, [layer], backward=True)
        check_fits(n * size * size, device, f"{n} image(s) of {size}x{size} at once", "--size" +
                   (" or --batch" if isinstance(config, FeatureVizConfig) else ""), per_pixel)

    # ---- objective ---------------------------------------------------------------------------
    def objective(self, x: torch.Tensor, targets: torch.Tensor, nudge: bool = False) -> torch.Tensor:
        """Per image of x [n, 3, S, S]: its target's activation (mean over positions, the centre
        position for neurons, the logit for classes); targets [n] long. Returns [n] float32."""
        with precision_mode(self.config.precision, self.device):
            f = self.net.features(x, [self.layer])[self.layer]
        f = f.float()
        rows = torch.arange(f.shape[0], device=f.device)
        picked = f[rows, targets]                           # [n, H, W] or [n]
        if picked.ndim == 1:
            return picked
        mean = picked.mean(dim=(1, 2))
        if self.kind != "neuron":
            return mean
        centre = picked[:, picked.shape[1] // 2, picked.shape[2] // 2]
        # A ReLU neuron that is off in the grey start image has no gradient and would stay off:
        # a small share of its channel's mean (the channel is on somewhere, near the borders at
        # least) gets it going. Only while optimizing; `measure` reports the neuron alone.
        return centre + NEURON_NUDGE * mean if nudge else centre

    def measure(self, x: torch.Tensor, targets: list[int]) -> list[float]:
        """The objective of each image of x without transforms (what the panels are labelled with)."""
        with torch.no_grad():
            t = torch.tensor(targets, device=self.device)
            return self.objective(x.to(self.device), t).tolist()

    # ---- run ---------------------------------------------------------------------------------
    def run(self, callback: Callable[[Progress], None] | None = None) -> FeatureVizResult:
        """Render every target, config.batch (featureviz) at a time: one progress stage per batch.

        Not optimize.optimize_image: that loop optimizes an image directly (clamping it to [0, 1])
        and keeps the lowest-loss iterate, while here the variables are a spectrum or pre-sigmoid
        values and the objective is stochastic (fresh random transforms every step), so "the best
        iterate" means nothing: the last is the result. Progress and Interrupted are the same records.
        Raises Interrupted on Ctrl-C, with `.partial` (a FeatureVizResult of the images so far).
        """
        callback_or_none(callback, "Progress")
        c = self.config
        gen = torch.Generator(device="cpu").manual_seed(c.seed)
        per_batch = getattr(c, "batch", 1)
        chunks = [self.targets[i:i + per_batch] for i in range(0, len(self.targets), per_batch)]
        start = time.perf_counter()
        done: list[tuple[list[int], torch.Tensor, list[float], list[float]]] = []
        history: list[dict[str, float]] = []
        for stage, chunk in enumerate(chunks, 1):
            param = ImageParam(len(chunk), c.size, c.param, c.decorrelate, gen, self.device, c.fft_power)
            initial = self.measure(param.images(), chunk)
            try:
                self._ascend(param, chunk, gen, stage, len(chunks), history, callback, start)
            except KeyboardInterrupt:
                x = param.images().detach()
                done.append((chunk, x.cpu(), initial, self.measure(x, chunk)))
                partial = self._result(done, history, start)
                steps = sum(1 for row in history if row["stage"] == stage)
                # best_image: every image so far [N, 3, S, S] (one for classviz, as RunOutputs saves).
                stop = Interrupted(partial.images, steps, stage, self.config)
                stop.partial = partial
                raise stop from None
            x = param.images().detach()
            done.append((chunk, x.cpu(), initial, self.measure(x, chunk)))
        return self._result(done, history, start)

    def _ascend(self, param: ImageParam, chunk: list[int], gen: torch.Generator, stage: int, stages: int,
                history: list, callback, start: float) -> None:
        c = self.config
        opt = torch.optim.Adam([param.tensor], lr=c.lr)
        targets = torch.tensor(chunk, device=self.device).repeat(c.copies)
        for i in range(1, c.steps + 1):
            x = random_transform(param.images(), c.copies, c.jitter, c.scale, c.rotate, gen)
            values = self.objective(x, targets, nudge=True)
            opt.zero_grad(set_to_none=False)
            # Each image's variables see only their own objective: summing over the batch keeps
            # the images independent (and Adam is invariant to the objective's scale).
            (-values.sum()).backward()
            opt.step()
            if c.blur and i % BLUR_EVERY == 0:
                param.blur(c.blur)
            param.decay(c.decay)
            value = float(values.detach().mean())
            if not math.isfinite(value):
                raise NumericalError(f"the objective became {value} at step {i}; lower --lr")
            history.append({self.term: value, "stage": stage})
            if callback is not None:  # Progress's loss is minimized: minus the objective
                callback(Progress(i, c.steps, -value, {self.term: value}, time.perf_counter() - start,
                                  stage, stages))

    def _result(self, done, history, start) -> FeatureVizResult:
        targets = [t for chunk, *_ in done for t in chunk]
        x = torch.cat([d[1] for d in done])
        initial = [v for d in done for v in d[2]]
        final = [v for d in done for v in d[3]]
        if self.kind == "class":
            labels = [class_label(self.net, k) for k in targets]
        else:
            labels = [f"#{k}" for k in targets]
        probabilities = top5 = None
        if self.kind == "class":
            with torch.no_grad(), precision_mode(self.config.precision, self.device):
                p = self.net.features(x.to(self.device), [LOGITS])[LOGITS].float().softmax(dim=1).cpu()
            probabilities = [float(p[i, k]) for i, k in enumerate(targets)]
            top = p.topk(min(5, p.shape[1]), dim=1)
            top5 = [list(zip(ix.tolist(), [round(v, 4) for v in pv.tolist()]))
                    for ix, pv in zip(top.indices, top.values)]
        return FeatureVizResult(x, targets, labels, initial, final, self.kind, self.display, self.config,
                                history, time.perf_counter() - start, probabilities, top5)


def featureviz(config: FeatureVizConfig | None = None, callback: Callable[[Progress], None] | None = None,
               net: Net | None = None) -> FeatureVizResult:
    """Activation maximization of config.channels of config.layer (or config.target_class logits)."""
    config = FeatureVizConfig() if config is None else config
    config_of(config, FeatureVizConfig, note=" (classviz takes a ClassVizConfig)")
    return FeatureVisualizer(config, net).run(callback)


def classviz(config: ClassVizConfig, callback: Callable[[Progress], None] | None = None,
             net: Net | None = None) -> FeatureVizResult:
    """A picture of config.target_class as the classifier sees it (one image: result.image())."""
    config_of(config, ClassVizConfig, note=" (featureviz takes a FeatureVizConfig)")
    return FeatureVisualizer(config, net).run(callback)

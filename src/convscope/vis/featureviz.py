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
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from PIL import Image

from .. import images
from ..devices import default_precision, resolve_device
from ..argcheck import callback_or_none, check_loaded_net, config_of
from ..errors import ConfigError, NumericalError
from ..nets import AUTO, LOGITS, Net, auto_layer, get_net
from ..nets.classes import class_index, is_class_name
from ..optimize import Interrupted, Progress, precision_mode
from ..options import _RANGE, PRECISIONS, check_choices, parse_indices
from ..options import option as _opt
from .imageprior import ImageParam, random_transform

PARAMS = ("fft", "pixels")
KINDS = ("channel", "neuron", "class")
AUTO_DEPTH = 0.6        # --layer auto: the block output 60% of the way through the net
SHEET_SIDE = 128        # featureviz --size default on ImageNet nets (px); smaller nets: their input size
MAX_SIDE = 2048
DEFAULT_CHANNELS = 16   # --channels default: the first 16 (or all, when the layer has fewer)
BLUR_EVERY = 4          # --blur: every this many steps (Yosinski et al. blur every 4-8 steps)
NEURON_NUDGE = 0.05     # --neuron: weight of the channel mean added while optimizing (see objective)


# ----------------------------------------------------------------------------------- configs

@dataclass
class RenderConfig:
    """The options shared by featureviz and classviz: parameterization, transforms, optimizer."""

    net: str = _opt("network: vgg19, efficientnet_lite0, or a torchvision classifier (NAME:random = "
                    "random weights)", "vgg19")
    size: int | None = _opt(f"side of the square image in pixels (default: {SHEET_SIDE} on ImageNet nets, "
                            "the input size of smaller nets, 32 for CIFAR)", None)
    steps: int = _opt("Adam steps", 64)
    lr: float = _opt("Adam learning rate (in units of the parameterization)", 0.08)
    param: str = _opt("image parameterization: fft (1/frequency-scaled spectrum) or pixels", "fft",
                      choices=PARAMS)
    fft_power: float = _opt("fft: start from and move along a 1/frequency^power spectrum (larger = smoother)",
                            1.0)
    decorrelate: bool = _opt("optimize in decorrelated colour space (natural-image colour statistics)", True)
    jitter: int | None = _opt("random shift of up to this many pixels each step (default: size/16)", None)
    scale: float = _opt("random zoom each step, by a factor in [1 - scale, 1 + scale]", 0.1)
    rotate: float = _opt("random rotation each step, up to this many degrees either way", 10.0)
    copies: int = _opt("randomly transformed copies of each image per step (their mean is maximized)", 1)
    blur: float | None = _opt(f"Gaussian blur of this sigma (px) every {BLUR_EVERY} steps (default: size/256 "
                              "for --param pixels, 0 for fft, whose spectrum scaling already smooths)", None)
    decay: float = _opt("L2 decay: each step pulls the image this fraction of the way to grey", 0.0)
    seed: int = _opt("random seed (start image and transforms)", 0)
    device: str = _opt("device: auto, cpu, cuda, cuda:N, mps", "auto")
    precision: str = _opt("arithmetic: auto (tf32 on CUDA, bf16 on CPUs with native bf16, else fp32), "
                          "fp32, tf32, bf16", "auto", choices=PRECISIONS)

    def to_dict(self) -> dict:
        return asdict(self)

    def default_size(self, input_size: int) -> int:
        return min(SHEET_SIDE, input_size)

    def default_blur(self, size: int) -> float:
        return size / 256 if self.param == "pixels" else 0.0

    def validate(self):
        """Check every field that needs no network; ConfigError with a one-line message."""
        def flag(name):
            return f"--{name.replace('_', '-')}"

        def whole(name, lo, hi, none_ok=False):
            v = getattr(self, name)
            if v is None and none_ok:
                return
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ConfigError(f"{flag(name)} must be a whole number from {lo} to {hi}, not {v!r}")

        def real(name, lo, hi, what, lo_open=False, none_ok=False):
            v = getattr(self, name)
            if v is None and none_ok:
                return
            ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  and (lo < v if lo_open else lo <= v) and v <= hi)
            if not ok:
                raise ConfigError(f"{flag(name)} must be {what}, not {v!r}")

        for name in ("net", "param", "device", "precision") + (("layer",) if hasattr(self, "layer") else ()):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{flag(name)} must be a name, not {getattr(self, name)!r}")
        for name in ("decorrelate",) + (("neuron",) if hasattr(self, "neuron") else ()):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{flag(name)} must be True or False, not {getattr(self, name)!r}")
        whole("size", 8, MAX_SIDE, none_ok=True)
        whole("steps", 1, 1_000_000)
        whole("jitter", 0, MAX_SIDE, none_ok=True)
        whole("copies", 1, 64)
        real("lr", 0.0, 10.0, "a number in (0, 10]", lo_open=True)
        real("scale", 0.0, 0.5, "a number from 0 to 0.5")
        real("rotate", 0.0, 180.0, "a number of degrees from 0 to 180")
        real("blur", 0.0, 64.0, "a number of pixels from 0 to 64", none_ok=True)
        real("decay", 0.0, 0.5, "a number from 0 to 0.5")
        real("fft_power", 0.0, 4.0, "a number from 0 to 4")
        check_choices(self)
        return self


@dataclass
class FeatureVizConfig(RenderConfig):
    layer: str = _opt(f"layer by any name (see: convscope layers --net NET), or {AUTO}: the block output "
                      f"at {AUTO_DEPTH} of the depth of the net", AUTO)
    channels: str | None = _opt(f"channels to visualize: 0-15, 3,7,9 or 5 (default: the first "
                                f"{DEFAULT_CHANNELS})", None)
    neuron: bool = _opt("maximize only the centre position of each channel (a neuron), not its mean", False)
    target_class: str | None = _opt("maximize classifier logits instead of channels: index(es) 0-9, 3,7 or "
                                    "class names ('dumbbell'); needs a net with a head", None)
    batch: int = _opt("images optimized together in one batch (memory vs speed)", 16)

    def validate(self) -> FeatureVizConfig:
        super().validate()
        if not isinstance(self.batch, int) or isinstance(self.batch, bool) or not 1 <= self.batch <= 4096:
            raise ConfigError(f"--batch must be a whole number from 1 to 4096, not {self.batch!r}")
        if self.channels is not None:
            parse_indices(self.channels, "--channels")
        if self.target_class is not None:
            if self.channels is not None:
                raise ConfigError("--class and --channels are two different objectives; give one of them")
            if self.neuron:
                raise ConfigError("--neuron applies to channels, not to --class")
            if self.layer not in (AUTO, LOGITS):
                raise ConfigError(f"--class maximizes the classifier's logits; leave out --layer {self.layer}")
        return self


@dataclass
class ClassVizConfig(RenderConfig):
    # A stronger natural-image prior than featureviz's sheet: the net's own input size, more steps,
    # two transformed copies per step, a smoother spectrum (1/f^1.5) and a light blur. Chosen by
    # looking at dumbbell and military uniform on efficientnet_lite0: with 1/f alone the class
    # shows only as texture; 1/f^1.5 plus a 0.35 px blur gives whole objects (hexagonal dumbbells
    # held in fists); a 0.7 px blur washes them out, lr 0.12 scatters them.
    net: str = _opt("classifier: efficientnet_lite0 (ImageNet, bundled) or a torchvision classifier",
                    "efficientnet_lite0")
    size: int | None = _opt("side of the square image in pixels (default: the net's input size, 224 on "
                            "ImageNet)", None)
    steps: int = _opt("Adam steps", 128)
    fft_power: float = _opt("fft: start from and move along a 1/frequency^power spectrum (larger = smoother)",
                            1.5)
    copies: int = _opt("randomly transformed copies of the image per step (their mean logit is maximized)", 2)
    blur: float | None = _opt(f"Gaussian blur of this sigma (px) every {BLUR_EVERY} steps (default: size/640)",
                              None)
    target_class: str | None = _opt("class to draw: an index (543) or a name ('dumbbell', 'military "
                                    "uniform')", None)

    def default_size(self, input_size: int) -> int:
        return input_size

    def default_blur(self, size: int) -> float:
        return size / 640

    def validate(self) -> ClassVizConfig:
        super().validate()
        if self.target_class is None or not str(self.target_class).strip():
            raise ConfigError("give the class to draw: --class INDEX or --class NAME")
        return self


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

    `net` reuses an already loaded net (it must be config.net); by default it is loaded.
    """

    def __init__(self, config: RenderConfig, net: Net | None = None):
        if not isinstance(config, RenderConfig):
            config_of(config, FeatureVizConfig, ClassVizConfig)
        config = config.validate()
        check_loaded_net(net)
        if net is None:
            device = resolve_device(config.device)
            net = get_net(config.net, "max", device)
        else:
            device = next(net.parameters()).device
        self.net = net.use_channels_last(device.type in ("cuda", "cpu"))
        self.device = device
        precision = default_precision(device) if config.precision == "auto" else config.precision

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

"""The configs of the commands that render an image by optimization: featureviz and classviz,
dream, invert, texture (`vis.configs` holds the others and re-exports these).

Torch-free, like `vis.configs`: see there. The engines (`vis.featureviz`, `vis.dream`, `vis.invert`,
`vis.texture`) import their config from here and still export it under the same name.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import ConfigError
from ..options import AUTO, LOGITS, NET_HELP, OPTIMIZERS, check_max_lr
from ..options import POOLINGS, PRECISIONS, check_choices, documented, parse_indices
from ..options import option as _opt

# featureviz / classviz
PARAMS = ("fft", "pixels")
FEATUREVIZ_AUTO_DEPTH = 0.6  # --layer auto: the block output 60% of the way through the net
SHEET_SIDE = 128        # featureviz --size default on ImageNet nets (px); smaller nets: their input size
FEATUREVIZ_MAX_SIDE = 2048
DEFAULT_CHANNELS = 16   # --channels default: the first 16 (or all, when the layer has fewer)
BLUR_EVERY = 4          # --blur: every this many steps (Yosinski et al. blur every 4-8 steps)

# dream
DREAM_MAX_SIDE = 8192

# texture
# Gatys et al. 2015 (Fig. 2, and their released code): conv1_1 and pool1..pool4 of VGG19 with
# average pooling. Their "conv1_1" is Caffe's in-place-ReLU output, i.e. our relu1_1.
DEFAULT_LAYERS = ("relu1_1", "pool1", "pool2", "pool3", "pool4")
TEXTURE_MAX_SIDE = 8192
MAX_ITERATIONS = 1_000_000  # as for stylize: the loss history is allocated up front
MAX_LBFGS_HISTORY = 1000


@dataclass
class RenderConfig:
    """The options shared by featureviz and classviz: parameterization, transforms, optimizer."""

    net: str = _opt(NET_HELP, "vgg19")
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
        whole("size", 8, FEATUREVIZ_MAX_SIDE, none_ok=True)
        whole("steps", 1, 1_000_000)
        whole("jitter", 0, FEATUREVIZ_MAX_SIDE, none_ok=True)
        whole("copies", 1, 64)
        real("lr", 0.0, 10.0, "a number in (0, 10]", lo_open=True)
        real("scale", 0.0, 0.5, "a number from 0 to 0.5")
        real("rotate", 0.0, 180.0, "a number of degrees from 0 to 180")
        real("blur", 0.0, 64.0, "a number of pixels from 0 to 64", none_ok=True)
        real("decay", 0.0, 0.5, "a number from 0 to 0.5")
        real("fft_power", 0.0, 4.0, "a number from 0 to 4")
        check_choices(self)
        if self.copies not in (1, type(self).copies) and self.jitter == 0 and self.scale == 0 and self.rotate == 0:
            # (identical copies: the mean of one image's objective, repeated; ignored, exit 0)
            raise ConfigError(f"--copies {self.copies} makes randomly transformed copies, and --jitter, --scale and "
                              "--rotate are all 0: the copies are the same image; drop --copies or add a transform")
        if self.param != "fft" and self.fft_power != type(self).fft_power:  # (ignored, exit 0)
            raise ConfigError(f"--fft-power shapes the fft parameterization, not --param {self.param}: drop it "
                              "or use --param fft")
        return self


@documented
@dataclass
class FeatureVizConfig(RenderConfig):
    layer: str = _opt(f"layer by any name (see: convscope layers --net NET), or {AUTO}: the block output "
                      f"at {FEATUREVIZ_AUTO_DEPTH} of the depth of the net", AUTO)
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


@documented
@dataclass
class ClassVizConfig(RenderConfig):
    # A stronger natural-image prior than featureviz's sheet: the net's own input size, more steps,
    # two transformed copies per step, a smoother spectrum (1/f^1.5) and a light blur. Chosen by
    # looking at dumbbell and military uniform on efficientnet_lite0: with 1/f alone the class
    # shows only as texture; 1/f^1.5 plus a 0.35 px blur gives whole objects (hexagonal dumbbells
    # held in fists); a 0.7 px blur washes them out, lr 0.12 scatters them.
    net: str = _opt("classifier: efficientnet_lite0 (ImageNet, bundled), a torchvision classifier, or a classify "
                    "run folder", "efficientnet_lite0")
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


@documented
@dataclass
class DreamConfig:
    # 512 px (long side): the default run on tubingen.jpg took 17 s on 2 CPU cores (bf16), 1 GB RSS.
    size: int = _opt("long side the image is resized to before dreaming (pixels)", 512)
    layer: str = _opt("layer whose activations are amplified, by any name; auto = relu4_3 on the VGG "
                      "nets, the block output at 60% depth on others", "auto")
    channel: int | None = _opt("amplify only this channel of --layer (its mean activation)", None)
    octaves: int = _opt("number of scales, smallest first (fewer when the image is too small)", 4)
    octave_scale: float = _opt("size ratio between successive octaves", 1.4)
    steps: int = _opt("ascent steps per octave", 10)
    lr: float = _opt("step size in [0, 1] image units (each step moves pixels by about lr)", 0.01)
    jitter: int = _opt("random circular shift of up to this many pixels each step (0 = none)", 32)
    tile: int = _opt("compute the gradient in tiles of this many pixels (bounds memory)", 512)
    zoom_frames: int = _opt("also write this many frames of a zoom-in sequence, OUT_0001.png ...", 0)
    zoom: float = _opt("zoom factor between frames (centre crop, resized back)", 1.05)
    zoom_steps: int = _opt("ascent steps per zoom frame (one octave)", 5)
    pooling: str = _opt("pooling in the network", "max", choices=POOLINGS)
    net: str = _opt(NET_HELP, "vgg19")
    seed: int = _opt("random seed (the jitter)", 0)
    device: str = _opt("device: auto, cpu, cuda, cuda:N, mps", "auto")
    precision: str = _opt("arithmetic: auto (tf32 on CUDA, bf16 on CPUs with native bf16, else fp32), "
                          "fp32, tf32, bf16", "auto", choices=PRECISIONS)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> DreamConfig:
        """Check every field; ConfigError with a one-line message on the first problem."""
        def whole(name, lo, hi=None):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
                top = f" to {hi}" if hi is not None else " or more"
                raise ConfigError(f"--{name.replace('_', '-')} must be a whole number from {lo}{top}, not {v!r}")

        def real(name, lo, hi, what):
            v = getattr(self, name)
            if (not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)
                    or not lo < v <= hi):
                raise ConfigError(f"--{name.replace('_', '-')} must be {what}, not {v!r}")

        whole("size", 1, DREAM_MAX_SIDE)
        whole("octaves", 1, 20)
        whole("steps", 1, 1_000_000)  # as stylize's iterations: the history grows per step
        whole("jitter", 0, DREAM_MAX_SIDE)
        whole("tile", 16, DREAM_MAX_SIDE)
        whole("zoom_frames", 0, 100000)
        whole("zoom_steps", 1, 1_000_000)
        real("lr", 0.0, 1.0, "a number in (0, 1]")
        real("octave_scale", 1.0, 4.0, "a number above 1 and at most 4")
        real("zoom", 1.0, 4.0, "a number above 1 and at most 4")
        if self.octaves == 1 and self.octave_scale != DreamConfig.octave_scale:  # (ignored, exit 0)
            raise ConfigError("--octave-scale is the size ratio between octaves, and --octaves 1 has one: drop it "
                              "or add octaves")
        if self.channel is not None:
            whole("channel", 0)
        check_choices(self)
        return self


@documented
@dataclass
class InvertConfig:
    layer: str = _opt("layer whose representation is inverted (any name: relu3_1, block3_conv1, ...); "
                      "auto = relu3_1 on the VGG nets, the block output at 40% depth on others", "auto")
    layers: tuple[str, ...] | None = _opt(
        "several layers: one reconstruction each, side by side with the original in one figure", None)
    size: int | None = _opt("long side of the image in pixels (default: 224, or a classifier run's own input "
                            "size when smaller)", None)
    iterations: int = _opt("optimizer iterations per layer", 200)
    alpha: float = _opt("exponent of the alpha-norm range prior R_alpha = ||x||_alpha^alpha", 6.0)
    alpha_weight: float = _opt("lambda_alpha, weight of the alpha-norm prior (normalized units)", 1.0)
    beta: float = _opt("exponent of the TV^beta smoothness prior (2 as in the paper's CNN figures)", 2.0)
    tv_weight: float | None = _opt("lambda_V, weight of the TV^beta prior (normalized units; default "
                                   "by the layer's depth: 0.01 / 0.05 / 0.3 up to stride 2 / 8 / beyond)", None)
    optimizer: str = _opt("optimizer", "lbfgs", choices=OPTIMIZERS)
    lr: float | None = _opt("learning rate (default: lbfgs 1.0, adam 0.02, sgd 0.05)", None)
    net: str = _opt(NET_HELP, "vgg19")
    pooling: str = _opt("pooling in the network: max, or avg", "max", choices=POOLINGS)
    seed: int = _opt("random seed (the noise the reconstruction starts from)", 0)
    device: str = _opt("device: auto, cpu, cuda, cuda:N, mps", "auto")
    precision: str = _opt("arithmetic: auto (tf32 on CUDA, bf16 on CPUs with native bf16, else fp32), "
                          "fp32, tf32, bf16", "auto", choices=PRECISIONS)
    save_every: int = _opt("write the current reconstruction every N iterations (0 = never)", 0)

    def layer_list(self) -> tuple[str, ...]:
        return tuple(self.layers) if self.layers else (self.layer,)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> InvertConfig:
        """Check every field; ConfigError with a one-line message on the first problem."""
        def number(name, value, allow_zero=False, integer=False):
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                  and (value >= 0 if allow_zero else value > 0) and (not integer or isinstance(value, int)))
            if not ok:
                kind = "non-negative" if allow_zero else "positive"
                raise ConfigError(f"--{name.replace('_', '-')} must be a {kind} "
                                  f"{'whole number' if integer else 'number'}, not {value!r}")

        if self.size is not None:
            number("size", self.size, integer=True)
        if self.size is not None and not 16 <= self.size <= 4096:
            raise ConfigError(f"--size {self.size} is out of range (16 to 4096 px)")
        number("iterations", self.iterations, integer=True)
        if self.iterations > MAX_ITERATIONS:  # the loss history is allocated up front
            raise ConfigError(f"--iterations must be a whole number from 1 to {MAX_ITERATIONS}, "
                              f"not {self.iterations!r}")
        number("save_every", self.save_every, allow_zero=True, integer=True)
        number("alpha_weight", self.alpha_weight, allow_zero=True)
        if self.tv_weight is not None:
            number("tv_weight", self.tv_weight, allow_zero=True)
        if self.lr is not None:
            number("lr", self.lr)
            check_max_lr(self.lr)
        if isinstance(self.alpha, bool) or not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha)
                                                 and self.alpha >= 1):
            raise ConfigError(f"--alpha must be a number >= 1, not {self.alpha!r}")
        if isinstance(self.beta, bool) or not (isinstance(self.beta, (int, float)) and math.isfinite(self.beta)
                                                and self.beta >= 1):
            raise ConfigError(f"--beta must be a number >= 1 (1 = total variation, 2 = squared), not {self.beta!r}")
        for exponent, weight in (("alpha", "alpha_weight"), ("beta", "tv_weight")):  # (ignored, exit 0)
            if getattr(self, weight) == 0 and getattr(self, exponent) != getattr(InvertConfig, exponent):
                raise ConfigError(f"--{exponent} is the exponent of a prior that --{weight.replace('_', '-')} 0 "
                                  "turns off: drop one of them")
        if not isinstance(self.layer, str):  # (None: a TypeError deep in the engine)
            raise ConfigError(f"--layer must be a layer name (or auto), not {self.layer!r}")
        if self.layers is not None and not self.layers:
            raise ConfigError("--layers needs at least one layer name")
        if self.layers is not None and (not isinstance(self.layers, (list, tuple))
                                        or not all(isinstance(n, str) for n in self.layers)):
            raise ConfigError(f"--layers must be a list of layer names, not {self.layers!r}")
        if self.layers is not None:
            # --layer would be silently ignored next to --layers: say so rather than drop it.
            if self.layer != "auto":
                raise ConfigError(f"give --layer {self.layer} or --layers, not both (--layers inverts each "
                                  "layer it lists)")
            twice = sorted({name for name in self.layers if list(self.layers).count(name) > 1})
            if twice:
                raise ConfigError(f"--layers lists {', '.join(twice)} twice; each layer once")
        check_choices(self)
        return self


@documented
@dataclass
class TextureConfig:
    size: tuple[int, int] = _opt("output width and height in pixels (any aspect, independent of the source)",
                                 (256, 256))
    source_size: int = _opt("long side the source texture is resized to before its Grams are measured", 256)
    # 100 iterations at 256x256: 44 s measured on 2 CPU cores (bf16) for starry_night.jpg, Gram loss -99%.
    iterations: int = _opt("optimizer iterations", 100)
    layers: tuple[str, ...] = _opt("layers whose Gram matrices are matched, by any name; auto = "
                                   f"{' '.join(DEFAULT_LAYERS)} on the VGG nets, the first five block "
                                   "outputs on others", (AUTO,))
    layer_weights: tuple[float, ...] | None = _opt(
        "relative weight per layer (default: equal); normalized to sum to 1", None)
    tv_weight: float = _opt("weight of the total-variation (smoothness) loss (the paper uses none)", 0.0)
    range_weight: float = _opt("weight of the penalty on pixels outside [0, 1] (L-BFGS does not clamp)", 30.0)
    optimizer: str = _opt("optimizer", "lbfgs", choices=OPTIMIZERS)
    warmup: int = _opt("Adam iterations before L-BFGS starts (counted in --iterations; lbfgs only)", 10)
    lr: float | None = _opt("learning rate (default: lbfgs 1.0, adam 0.02, sgd 0.05)", None)
    lbfgs_history: int = _opt("L-BFGS memory (pairs kept)", 100)
    pooling: str = _opt("pooling in the network: avg (as in Gatys et al.), or max", "avg", choices=POOLINGS)
    net: str = _opt(NET_HELP, "vgg19")
    tileable: bool = _opt("make a seamless tile (the image wraps around left-right and top-bottom)", False)
    match_histogram: bool = _opt("match the result's colour histogram to the source's afterwards", False)
    save_every: int = _opt("write the current image every N iterations (0 = never)", 0)
    seed: int = _opt("random seed (the start noise)", 0)
    device: str = _opt("device: auto, cpu, cuda, cuda:N, mps", "auto")
    precision: str = _opt("arithmetic: auto (tf32 on CUDA, bf16 on CPUs with native bf16, else fp32), "
                          "fp32, tf32, bf16", "auto", choices=PRECISIONS)
    cuda_graph: bool = _opt("replay iterations as a CUDA graph on GPU (L-BFGS)", True)

    def weights(self) -> tuple[float, ...]:
        """Per-layer weights, normalized to sum to 1."""
        w = self.layer_weights or (1.0,) * len(self.layers)
        return tuple(v / sum(w) for v in w)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> TextureConfig:
        """Check every field; ConfigError with a one-line message on the first problem."""
        def number(name, value, allow_zero=False):
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                  and (value >= 0 if allow_zero else value > 0))
            if not ok:
                kind = "non-negative" if allow_zero else "positive"
                raise ConfigError(f"--{name.replace('_', '-')} must be a {kind} number, not {value!r}")

        if not isinstance(self.size, (list, tuple)) or len(self.size) != 2:
            raise ConfigError(f"--size takes two numbers, width and height, not {self.size!r}")
        for name, side in (("size", self.size[0]), ("size", self.size[1]), ("source_size", self.source_size)):
            if not isinstance(side, int) or isinstance(side, bool) or not 0 < side <= TEXTURE_MAX_SIDE:
                raise ConfigError(f"--{name.replace('_', '-')} must be whole numbers of pixels from 1 to "
                                  f"{TEXTURE_MAX_SIDE}, not {side!r}")
        for name, high in (("iterations", MAX_ITERATIONS), ("lbfgs_history", MAX_LBFGS_HISTORY)):
            value = getattr(self, name)
            number(name, value)
            if not isinstance(value, int) or value > high:  # allocations scale with these
                raise ConfigError(f"--{name.replace('_', '-')} must be a whole number from 1 to {high}, not {value!r}")
        for name in ("tv_weight", "range_weight"):
            number(name, getattr(self, name), allow_zero=True)
        for name in ("save_every", "warmup"):  # (2.5 ran, a float number of iterations)
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ITERATIONS:
                raise ConfigError(f"--{name.replace('_', '-')} must be a whole number from 0 to {MAX_ITERATIONS}, "
                                  f"not {value!r}")
        for name in ("tileable", "match_histogram", "cuda_graph"):  # ("no" counted as True)
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"--{name.replace('_', '-')} must be True or False, not {getattr(self, name)!r}")
        if self.lr is not None:
            number("lr", self.lr)
            check_max_lr(self.lr)
        check_choices(self)
        if self.optimizer != "lbfgs":  # (what only the L-BFGS runs use was ignored without a word)
            # (the defaults, and no warm-up, are what any optimizer may be given)
            for name, unused in (("warmup", (TextureConfig.warmup, 0)),
                                 ("lbfgs_history", (TextureConfig.lbfgs_history,))):
                if getattr(self, name) not in unused:
                    raise ConfigError(f"--{name.replace('_', '-')} applies to --optimizer lbfgs only, not "
                                      f"{self.optimizer}: drop it or change the optimizer")
        if not self.layers:
            raise ConfigError("--layers needs at least one layer")
        if not isinstance(self.layers, (list, tuple)) or not all(isinstance(n, str) for n in self.layers):
            raise ConfigError(f"--layers must be a list of layer names, not {self.layers!r}")
        if self.layer_weights is not None:
            for v in self.layer_weights:
                number("layer_weights", v, allow_zero=True)
            if len(self.layer_weights) != len(self.layers) and tuple(self.layers) != (AUTO,):
                raise ConfigError(f"--layer-weights has {len(self.layer_weights)} weight(s) for "
                                  f"{len(self.layers)} layer(s); give one per layer")
            if sum(self.layer_weights) <= 0:
                raise ConfigError("--layer-weights must not all be zero")
        return self

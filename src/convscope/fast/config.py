"""Options of the feed-forward trainers, of fast stylization and of videos: one source of truth for
the CLI, the Python API and the web UI. Free of torch, so building the CLI's options stays cheap; the
engines (train, apply, video) import their configs from here."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

from ..errors import ConfigError
from ..options import check_choices, check_max_lr, documented
from ..options import option as _opt

TRAIN_PRECISIONS = ("auto", "fp32", "bf16")
MAX_STYLE_SIZE = 4096  # px, a style image's long side (training and one pass): beyond, VGG19 runs out of memory
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


@dataclass
class _Checked:
    def to_dict(self) -> dict:
        return asdict(self)

    def _number(self, name: str) -> float:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"--{name.replace('_', '-')} must be a number, not {value!r}")
        return value

    def _whole(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ConfigError(f"--{name.replace('_', '-')} must be a whole number, not {value!r}")

    def _positive(self, *names: str) -> None:
        for name in names:
            if not 0 < self._number(name) < math.inf:  # NaN and inf too: they only fail later, mid-run
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, not {getattr(self, name)}")

    def _check_widths(self, name: str = "widths", count: int = 3) -> None:
        widths = getattr(self, name)
        if (not isinstance(widths, (tuple, list)) or len(widths) != count
                or any(isinstance(w, bool) or not isinstance(w, numbers.Integral) for w in widths)
                or min(widths) < 1 or max(widths) > 1024):
            raise ConfigError(f"--{name.replace('_', '-')} takes {('three', 'four')[count - 3]} channel counts "
                              f"(whole numbers) between 1 and 1024, not {widths!r}")

    def _non_negative(self, *names: str) -> None:
        for name in names:
            if not 0 <= self._number(name) < math.inf:
                raise ConfigError(f"--{name.replace('_', '-')} must be 0 or more, not {getattr(self, name)}")


INIT_HELP = ("start from this trained model's weights (a built-in name or a .safetensors file of the same "
             "kind and architecture) instead of random ones: training continues it with a fresh optimizer "
             "and schedule")


@dataclass
class TrainCommon(_Checked):
    size: int = _opt("side of the square training crops, in pixels", 256)
    batch_size: int = _opt("images per step", 4)
    steps: int = _opt("optimizer steps", 4000)
    lr: float = _opt("Adam learning rate (halved at 50% and 75% of the steps)", 1e-3)
    preview_every: int = _opt("write a preview image every N steps (0 = never)", 500)
    checkpoint_every: int = _opt("save the model and a resume checkpoint every N steps", 250)
    device: str = _opt("auto, cpu, cuda, cuda:N or mps", "auto")
    precision: str = _opt("arithmetic: auto (bf16 where the device has it natively, else fp32), fp32, bf16",
                          "auto", choices=TRAIN_PRECISIONS)
    seed: int = _opt("random seed (crops, flips, order, initialization)", 0)
    init: str | None = _opt(INIT_HELP, None)

    def validate(self):
        check_choices(self)
        self._whole("size", "batch_size", "steps", "preview_every", "checkpoint_every")
        self._positive("size", "batch_size", "steps", "lr", "checkpoint_every")
        self._non_negative("preview_every")
        check_max_lr(self.lr)  # (Adam's step overflowed float32: --lr 1e308 was a RuntimeError traceback)
        if self.size < 32 or self.size > 2048:
            raise ConfigError(f"--size must be between 32 and 2048 pixels, not {self.size}")
        if self.batch_size > 1024 or self.steps > 10_000_000:
            raise ConfigError("--batch-size (at most 1024) or --steps (at most 10,000,000) is too large")
        return self


@documented
@dataclass
class TrainStyleConfig(TrainCommon):
    """Options of `convscope.fast.train_style` (`convscope train-style`)."""

    style_size: int = _opt("long side the style image is resized to for its Gram targets (sets the "
                           "scale of brush strokes)", 384)
    content_weight: float = _opt("weight of the content loss (relative feature error)", 1.0)
    style_weight: float = _opt("weight of the style loss (relative Gram error, averaged over layers)", 10.0)
    tv_weight: float = _opt("weight of the total-variation loss", 1.0)
    content_layer: str = _opt("VGG19 layer of the content loss", "relu3_1")
    style_layers: tuple[str, ...] = _opt("VGG19 layers of the style loss", STYLE_LAYERS)
    widths: tuple[int, ...] = _opt("channels of the network's three stages (Johnson et al.: 32 64 128)",
                                   (16, 32, 48))
    residual_blocks: int = _opt("residual blocks", 5)
    init: str | None = _opt(INIT_HELP + ". The network may grow from it: more --residual-blocks or wider "
                            "--widths start out computing the same images", None)

    def validate(self):
        super().validate()
        self._whole("style_size", "residual_blocks")
        self._positive("style_size", "residual_blocks")
        self._non_negative("content_weight", "style_weight", "tv_weight")
        self._check_widths()
        if self.style_size > MAX_STYLE_SIZE:  # VGG19 features of a huge style image exhaust memory (OOM kill)
            raise ConfigError(f"--style-size must be at most {MAX_STYLE_SIZE} pixels, not {self.style_size}")
        if self.residual_blocks > 64:
            raise ConfigError("--residual-blocks must be at most 64")
        if isinstance(self.style_layers, str):  # one layer name is that layer, not its letters
            self.style_layers = (self.style_layers,)
        if not isinstance(self.style_layers, (tuple, list)) or not self.style_layers or not all(
                isinstance(n, str) for n in self.style_layers):
            raise ConfigError(f"--style-layers needs at least one layer name, not {self.style_layers!r}")
        if not isinstance(self.content_layer, str):  # (None or a list: a TypeError at the first step)
            raise ConfigError(f"--content-layer must be one layer name, not {self.content_layer!r}")
        return self


ARBITRARY_ENCODERS = ("vgg19", "lite")


@documented
@dataclass
class TrainArbitraryConfig(TrainCommon):
    style_weight: float = _opt("weight of the style loss (channel means and stds, relu1_1..relu4_1) "
                               "against the content loss (Huang & Belongie: 10)", 10.0)
    widths: tuple[int, ...] = _opt("decoder channels where VGG19 has 256 128 64 (the paper's decoder; "
                                   "the built-in adain-lite's: 64 32 16)", (128, 64, 32))
    encoder: str = _opt("vgg19: train a decoder for the frozen VGG19 encoder; lite: AdaIN-lite, a small "
                        "encoder distilled from VGG19's relu4_1 trained together with the decoder "
                        "(much faster on a CPU; one model file holds both)", "vgg19", choices=ARBITRARY_ENCODERS)
    encoder_widths: tuple[int, ...] = _opt("lite: channels of the encoder's four stages (VGG19: 64 128 256 512)",
                                           (16, 32, 64, 128))
    mimic_weight: float = _opt("lite: weight of the distillation loss (the encoder's relative relu4_1 error "
                               "against VGG19's on the content and style crops; 1 weighs it like the same "
                               "relative error of the content loss)", 100.0)
    init: str | None = _opt(INIT_HELP + ". With --encoder lite it may also be a plain decoder of the same "
                            "--widths (e.g. adain), which then starts the decoder only", None)

    def validate(self):
        super().validate()
        self._non_negative("style_weight", "mimic_weight")
        self._check_widths()
        self._check_widths("encoder_widths", 4)
        # The lite encoder's options shape nothing when VGG19 encodes (they were ignored with exit 0).
        for name in ("encoder_widths", "mimic_weight"):
            value = getattr(self, name)
            if self.encoder != "lite" and (tuple(value) if isinstance(value, list) else value) != \
                    getattr(TrainArbitraryConfig, name):
                raise ConfigError(f"--{name.replace('_', '-')} applies to --encoder lite only; drop it or add "
                                  "--encoder lite")
        return self


# ---- one-pass stylization (fast.apply) ----------------------------------------------------------
PRESERVE = ("none", "luminance", "histogram")
FAST_PRECISIONS = ("auto", "fp32", "bf16")
MAX_STYLES = 16
MIN_SIDE = 8         # px a side for the arbitrary method: VGG halves three times before relu4_1
MAX_SIZE = 16384     # --size at most


@documented
@dataclass
class FastConfig:
    """Options of one-pass stylization (`stylize --model ...` and `stylize --method arbitrary`)."""
    size: int = _opt("long side of the output in pixels (0 = the content's own size)", 0)
    strength: float = _opt("feed-forward: blend of the stylized image with the content (1 = all style)", 1.0)
    alpha: float = _opt("arbitrary: style strength, interpolating content and style features (0..1)", 1.0)
    style_size: int = _opt("arbitrary: long side the style images are resized to (sets the stroke scale)", 512)
    preserve_color: str = _opt("keep the content's colours: none, luminance (keep only the stylized "
                               "luminance), histogram (match the colours to the content's)", "none",
                               choices=PRESERVE)
    device: str = _opt("auto, cpu, cuda, cuda:N or mps", "auto")
    precision: str = _opt("auto (bf16 where the device has it natively, else fp32), fp32, bf16", "auto",
                          choices=FAST_PRECISIONS)

    def validate(self) -> FastConfig:
        check_choices(self)
        for name in ("size", "style_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"--{name.replace('_', '-')} must be a whole number of pixels, not {value!r}")
        for name in ("strength", "alpha"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"--{name} must be a number between 0 and 1, not {value!r}")
        if not 0 <= self.size <= MAX_SIZE:
            raise ConfigError(f"--size must be between 0 (the content's size) and {MAX_SIZE}, not {self.size}")
        for name in ("strength", "alpha"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"--{name} must be between 0 and 1, not {value}")
        if not 16 <= self.style_size <= MAX_STYLE_SIZE:
            raise ConfigError(f"--style-size must be between 16 and {MAX_STYLE_SIZE}, not {self.style_size}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


# ---- videos (fast.video) -----------------------------------------------------------------------
# Output extension -> ffmpeg muxer. All three hold H.264; the audio copy falls back to AAC.
VIDEO_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
# H.264 encoder presets of ffmpeg (--preset).
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


@documented
@dataclass
class VideoConfig(_Checked):
    """Options of `stylize-video` (shared with any other front end)."""
    size: int = _opt("long side of the output frames in pixels (0 = the source's size)", 0)
    max_frames: int = _opt("stylize only the first N frames (0 = all)", 0)
    temporal: float = _opt("reduce flicker: blend each frame with the previous output where the input "
                           "did not change (0 = off, up to 1 = strongest)", 0.0)
    temporal_sigma: float = _opt("temporal: how large a change of a pixel (0..1, after a 2-pixel blur) "
                                 "still counts as the same content", 0.04)
    batch: int = _opt("frames per forward pass (0 = auto: 1 on CPUs, where batching measured no "
                      "faster; up to 4 small frames on GPUs)", 0)
    crf: int = _opt("H.264 quality: 0 (lossless) to 51 (worst); 18 looks transparent, 23 is "
                    "ffmpeg's default", 18)
    preset: str = _opt("H.264 encoder speed: slower presets make smaller files", "medium", choices=PRESETS)
    audio: bool = _opt("keep the source's audio (--no-audio drops it)", True)

    def validate(self) -> VideoConfig:
        check_choices(self)
        # (the API's size='32' and max_frames=None were TypeErrors, crf=18.5 went to x264, audio='no' was True)
        self._whole("size", "max_frames", "batch", "crf")
        self._number("temporal")
        self._number("temporal_sigma")
        if not isinstance(self.audio, bool):
            raise ConfigError(f"audio must be True or False, not {self.audio!r}")
        if self.size != 0 and not 16 <= self.size <= 8192:
            raise ConfigError(f"--size must be 0 (the source's size) or between 16 and 8192, not {self.size}")
        if self.max_frames < 0:
            raise ConfigError(f"--max-frames must be 0 (all) or more, not {self.max_frames}")
        if not 0.0 <= self.temporal <= 1.0:
            raise ConfigError(f"--temporal must be between 0 (off) and 1, not {self.temporal}")
        if not 0.0 < self.temporal_sigma <= 1.0:
            raise ConfigError(f"--temporal-sigma must be above 0 and at most 1, not {self.temporal_sigma}")
        if self.temporal == 0 and self.temporal_sigma != VideoConfig.temporal_sigma:  # (ignored with exit 0)
            raise ConfigError("--temporal-sigma shapes the --temporal blend, which is off; add --temporal T "
                              "(above 0) or drop --temporal-sigma")
        if not 0 <= self.batch <= 64:
            raise ConfigError(f"--batch must be between 0 (auto) and 64, not {self.batch}")
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"--crf must be between 0 (lossless) and 51, not {self.crf}")
        return self


def blend_weights(weights, n: int, masked: bool = False) -> list[float]:
    """The arbitrary method's --style-blend for `n` style images, normalized to sum to 1 (equal when
    None); ConfigError for weights that cannot be (free of torch: the CLI checks before loading)."""
    if weights is None:
        return [1.0 / n] * n
    if masked:
        raise ConfigError("give either --style-blend or --mask, not both: a mask assigns each region one style")
    if not isinstance(weights, (list, tuple)) or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in weights):
        raise ConfigError(f"--style-blend must be a list of finite numbers, one per style image, not {weights!r}")
    if len(weights) != n:
        raise ConfigError(f"--style-blend has {len(weights)} weight(s) for {n} style image(s)")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError("--style-blend weights must be 0 or more and not all 0")
    total = float(sum(weights))
    return [w / total for w in weights]

"""The config dataclasses of the "see inside" commands, without torch.

`convscope.cli.add_config_options` builds each command's --options from these dataclasses, so the
CLI imports them for `--help` and for option errors: this module (and `configs_render`, whose
configs it re-exports) may import only the standard library and torch-free project modules;
numpy, PIL, matplotlib and torch only lazily, inside functions. The engines import their config
from here and still export it themselves (`from convscope.vis.dream import DreamConfig` works);
their limits are imported from here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import ConfigError
from ..options import NET_HELP, PRECISION_HELP, PRECISIONS, check_choices, documented, parse_indices, suggest
from ..options import option as _opt
from .configs_render import (AUTO, BLUR_EVERY, DEFAULT_CHANNELS, DEFAULT_LAYERS, DREAM_MAX_SIDE,
                             FEATUREVIZ_AUTO_DEPTH, FEATUREVIZ_MAX_SIDE, LOGITS, MAX_ITERATIONS,
                             MAX_LBFGS_HISTORY, OPTIMIZERS, PARAMS, SHEET_SIDE, TEXTURE_MAX_SIDE, ClassVizConfig,
                             DreamConfig, FeatureVizConfig, InvertConfig, RenderConfig, TextureConfig)

RULES = ("gradient", "deconvnet", "guided")  # backward rules of vis.attribution

# activations
ALL_CONV = "all-conv"            # --layer value: one figure per block (its last activation)
SORTS = ("mean", "max", "index")
ACTIVATIONS_MAX_SIZE = 8192      # long side in px, as for stylize

# explain
EXPLAIN_MAX_SIZE = 4096  # long side in px: every method is a full forward + backward at this size

# top-activations
FITS = ("crop", "squash")
PATCHES = ("rf", "image")
MAX_CHANNELS = 64    # rows of the figure; beyond that it is unreadable (run twice instead)
MAX_TOP = 100
TOPACT_MAX_SIZE = 2048


@documented
@dataclass
class ActivationsConfig:
    net: str = _opt(NET_HELP, "vgg19")
    layer: str = _opt(f"layer by any name (relu3_1, block3_conv1, conv3_1, pool3 ..., or a module path "
                      f"like layer3 on other nets), {ALL_CONV}: the last activation of every block, one "
                      "figure each, or auto: relu3_1 on the VGG nets, the block output at 40% depth on "
                      "others", "auto")
    size: int | None = _opt("long side the image is resized to, in pixels (default: 224, or a classifier "
                            "run's own input size when smaller)", None)
    max_channels: int = _opt("channels shown in the grid (the first ones in --sort order)", 64)
    sort: str = _opt("channel order: mean or max activation (largest first), or index", "mean",
                     choices=SORTS)
    cmap: str = _opt("matplotlib colormap of the feature maps (viridis, magma, gray, ...)", "viridis")
    shared_scale: bool = _opt("one colour scale for all panels (default: each panel its own "
                              "min..max)", False)
    device: str = _opt("device: auto, cpu, cuda, cuda:N, mps", "auto")

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> ActivationsConfig:
        """Check every field that needs no network; ConfigError with a one-line message."""
        for name in ("size", "max_channels"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, int) or value <= 0) and not (
                    name == "size" and value is None):
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive whole number, not {value!r}")
        if self.size is not None and self.size > ACTIVATIONS_MAX_SIZE:
            raise ConfigError(f"--size {self.size} is too large (at most {ACTIVATIONS_MAX_SIZE} px)")
        if not isinstance(self.layer, str):
            raise ConfigError(f"--layer must be one layer name (or {ALL_CONV} or auto), not {self.layer!r}")
        if not isinstance(self.shared_scale, bool):
            raise ConfigError(f"--shared-scale must be True or False, not {self.shared_scale!r}")
        if self.sort not in SORTS:
            raise ConfigError(f"--sort must be one of {', '.join(SORTS)}, not {self.sort!r}")
        check_cmap(self.cmap)
        return self


def check_cmap(name: str) -> None:
    """ConfigError unless `name` is a registered matplotlib colormap."""
    import matplotlib  # lazy: heavy, and only figures need it

    known = list(matplotlib.colormaps)
    if not isinstance(name, str):
        raise ConfigError(f"the colormap must be a name such as viridis or magma, not {name!r}")
    if name not in known:
        raise ConfigError(f"unknown colormap {name!r}{suggest(name, known)}; use a matplotlib colormap "
                          "such as viridis, magma, inferno, plasma, gray or RdBu_r")


@documented
@dataclass
class ExplainConfig:
    """Options of `convscope.vis.explain.explain` (`convscope explain`)."""

    net: str = _opt("network: efficientnet_lite0 (ImageNet classes, bundled), vgg19 (no classifier: "
                    "explains a channel), any torchvision classifier, or a classify run folder", "efficientnet_lite0")
    target: str | None = _opt("class to explain: an index or an ImageNet class name, case-insensitive "
                              "(default: the top-1 prediction)", None)
    layer: str = _opt("explain a channel of this layer instead of a class (the only choice on nets "
                      f"without a classifier, such as vgg19); {AUTO} = the net's last block", AUTO)
    channel: int | None = _opt("channel of --layer to explain (default: the most active one on this image)",
                               None)
    cam_layer: str = _opt(f"Grad-CAM layer; {AUTO} = the net's last spatial layer before the target", AUTO)
    rules: tuple[str, ...] = _opt("backprojections shown, in order: guided (guided backprop; also gives "
                                  "guided Grad-CAM), deconvnet (Zeiler & Fergus), gradient (plain)",
                                  ("guided", "deconvnet"))
    size: int | None = _opt("long side the image is resized to, in pixels (any aspect ratio) (default: 224, "
                            "or a classifier run's own input size when smaller)", None)
    cmap: str = _opt("matplotlib colormap of the Grad-CAM heat map (jet, turbo, inferno, ...)", "jet")
    alpha: float = _opt("opacity of the heat map over the image, 0 to 1", 0.5)
    device: str = _opt("device: auto, cpu, cuda, cuda:N, mps", "auto")
    precision: str = _opt(PRECISION_HELP, "auto", choices=PRECISIONS)

    def rule_list(self) -> tuple[str, ...]:
        """The rules as a tuple (one rule may be given as a plain name)."""
        return (self.rules,) if isinstance(self.rules, str) else tuple(self.rules)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> ExplainConfig:
        """Check every field that needs no network; ConfigError with a one-line message."""
        if self.size is not None and (isinstance(self.size, bool) or not isinstance(self.size, int)
                                      or not 1 <= self.size <= EXPLAIN_MAX_SIZE):
            raise ConfigError(f"--size must be a whole number from 1 to {EXPLAIN_MAX_SIZE}, not {self.size!r}")
        if self.channel is not None and (isinstance(self.channel, bool) or not isinstance(self.channel, int)
                                         or self.channel < 0):
            raise ConfigError(f"--channel must be a whole number from 0, not {self.channel!r}")
        if (isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float))
                or not math.isfinite(self.alpha) or not 0 <= self.alpha <= 1):
            raise ConfigError(f"--alpha must be a number from 0 to 1, not {self.alpha!r}")
        rules = self.rule_list()
        if not rules:
            raise ConfigError(f"--rules needs at least one of {', '.join(RULES)}")
        for rule in rules:
            if rule not in RULES:
                raise ConfigError(f"unknown rule {rule!r} in --rules; choose from {', '.join(RULES)}")
        if len(set(rules)) != len(rules):
            raise ConfigError(f"--rules lists a rule twice: {' '.join(rules)}")
        if self.target is not None and not str(self.target).strip():
            raise ConfigError("--target is empty; give a class index or name")
        if self.target is not None and (self.layer != AUTO or self.channel is not None):
            raise ConfigError("--target explains a class, --layer/--channel a channel; give one or the other")
        check_cmap(self.cmap)
        check_choices(self)
        return self


@documented
@dataclass
class TopActConfig:
    net: str = _opt(NET_HELP, "vgg19")
    layer: str = _opt(f"layer by any name, or {AUTO}: the net's middle block output (relu3_4 on vgg19)", AUTO)
    channels: str = _opt("channels of --layer, one row of the figure each: ranges and lists such as "
                         f"0-7 or 1,5,9 (at most {MAX_CHANNELS})", "0-7")
    top: int = _opt("images per channel: the ones where the channel fires most", 9)
    size: int | None = _opt("side of the square every image is resized to (pixels) (default: 128, or a "
                            "classifier run's own input size when smaller)", None)
    fit: str = _opt("how an image becomes a square: crop (centre crop, then resize) or squash "
                    "(resize, ignoring the aspect ratio)", "crop", choices=FITS)
    patch: str = _opt("what the figure shows: rf (the patch at the unit's receptive field) or "
                      "image (whole images, receptive field outlined)", "rf", choices=PATCHES)
    # Zero padding makes many units fire hardest at the image border (measured: 5 of the top 5 of
    # vgg19 relu3_4 channel 0 over 40 photos sat at the border); those patches are cut off and say
    # more about the padding than about the channel.
    border: bool = _opt("also count positions whose receptive field extends past the image border "
                        "(by default only positions that see a whole field, or the least cut ones "
                        "when the field is larger than the image)", False)
    rule: str = _opt("how activations are projected to the pixels: deconvnet (Zeiler & Fergus), guided "
                     "(guided backprop), gradient, or auto: deconvnet when a max pooling runs before the "
                     "layer (its switches tie the projection to the image), else guided", AUTO,
                     choices=(AUTO, *RULES))
    batch_size: int = _opt("images per forward pass (memory grows with it)", 32)
    workers: int = _opt("threads decoding images while the network runs", 2)
    device: str = _opt("device: auto, cpu, cuda, cuda:N, mps", "auto")
    precision: str = _opt(PRECISION_HELP + " (of the scan; projections run in fp32)", "auto",
                          choices=PRECISIONS)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> TopActConfig:
        """Check every field that needs no network; ConfigError with a one-line message."""
        for name, lo, hi in (("top", 1, MAX_TOP), ("size", 1, TOPACT_MAX_SIZE), ("batch_size", 1, 4096),
                             ("workers", 1, 64)):
            v = getattr(self, name)
            if name == "size" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ConfigError(f"--{name.replace('_', '-')} must be a whole number from {lo} to {hi}, "
                                  f"not {v!r}")
        parse_channels(self.channels)
        check_choices(self)
        return self


def parse_channels(spec: str, count: int | None = None, layer: str = "the layer") -> list[int]:
    """"0-7" / "1,5,9" / "0-3,8" -> channel indices in the order given, duplicates dropped.
    With `count` (the channels of `layer`), each must be below it. ConfigError otherwise."""
    if not isinstance(spec, str):  # (5 or None: "--channels is empty")
        raise ConfigError(f"--channels must be text such as 0-7 or 1,5,9, not {spec!r}")
    if not spec.strip():
        raise ConfigError("--channels is empty; give channels such as 0-7 or 1,5,9")
    found = parse_indices(spec, "--channels", MAX_CHANNELS)
    if count is not None:
        bad = [c for c in found if c >= count]
        if bad:
            raise ConfigError(f"channel {bad[0]} is out of range: {layer} has {count} channels "
                              f"(0 to {count - 1})")
    return found

# Everything a command or an engine needs, these configs' and configs_render's alike.
__all__ = [
    "ActivationsConfig", "ClassVizConfig", "DreamConfig", "ExplainConfig", "FeatureVizConfig", "InvertConfig",
    "RenderConfig", "TextureConfig", "TopActConfig",
    "check_cmap", "parse_channels",
    "ACTIVATIONS_MAX_SIZE", "ALL_CONV", "AUTO", "BLUR_EVERY", "DEFAULT_CHANNELS", "DEFAULT_LAYERS",
    "DREAM_MAX_SIDE", "EXPLAIN_MAX_SIZE", "FEATUREVIZ_AUTO_DEPTH", "FEATUREVIZ_MAX_SIDE", "FITS", "LOGITS",
    "MAX_CHANNELS", "MAX_ITERATIONS", "MAX_LBFGS_HISTORY", "MAX_TOP", "OPTIMIZERS", "PARAMS", "PATCHES", "RULES",
    "SHEET_SIDE", "SORTS", "TEXTURE_MAX_SIDE", "TOPACT_MAX_SIZE",
]

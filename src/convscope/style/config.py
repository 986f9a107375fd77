"""Configuration of optimization-based style transfer: the one source of truth for its defaults.

The CLI builds its options from these fields (names, defaults, help), and every output records
the resolved config.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

from ..errors import ConfigError
from ..options import GRAM_NORMS, OPTIMIZERS, POOLINGS, PRECISIONS, TV_KINDS
from ..options import check_choices, check_max_lr, documented
from ..options import option as _opt

# Layer presets. Keras names (blockN_convM) are the activated conv outputs (reluN_M).
PRESETS: dict[str, dict[str, tuple[str, ...]]] = {
    # Gatys et al. 2016 (as in the Keras example): abstract content, style from every block.
    "gatys": {"content": ("block5_conv2",),
              "style": ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")},
    # Johnson et al. 2016: shallow content layer keeps more detail of the photo.
    "johnson": {"content": ("block2_conv2",),
                "style": ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3")},
    # The layers of the original Gatys paper's figures (content conv4_2) and of most classic tools.
    "classic": {"content": ("block4_conv2",),
                "style": ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")},
}
INITS = ("content", "noise", "style")          # or "fast", "fast:MODEL", or a path to an image file
FAST_INIT = "fast"
PRESERVE_COLOR = ("none", "luminance", "histogram")


def _names(layers: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Layer names as a tuple; one name given as a plain string is one layer (not its letters)."""
    return (layers,) if isinstance(layers, str) else tuple(layers)


VGG_NETS = ("vgg19", "vgg19-torchvision", "vgg16-torchvision", "vgg16")  # the nets the presets name layers of


def _registry_vgg(net) -> bool:
    return isinstance(net, str) and net.removesuffix(":random") in VGG_NETS


def check_layer_weights(weights: tuple[float, ...] | None, style_layers: tuple[str, ...]) -> None:
    """ConfigError unless --style-layer-weights (when given) has one weight per style layer."""
    if weights is not None and len(weights) != len(style_layers):
        raise ConfigError(f"--style-layer-weights has {len(weights)} weight(s) for {len(style_layers)} style "
                          f"layer(s) ({', '.join(style_layers)}); give one per layer")


def fast_init_model(init: str) -> str | None:
    """The one-pass model an --init asks to start from: "" (the built-in arbitrary model) for "fast",
    MODEL for "fast:MODEL"; None for every other init (an image file's path may be a PathLike)."""
    if not isinstance(init, str):
        return None
    if init == FAST_INIT:
        return ""
    prefix = FAST_INIT + ":"
    return init[len(prefix):] if init.startswith(prefix) else None


@documented
@dataclass
class StyleConfig:
    """Options of optimization-based style transfer (`convscope.stylize`, `convscope stylize`): give
    it to stylize as config=, or its fields as keyword arguments. validate() checks every field
    (a one-line ConfigError); to_dict() is what an output records."""

    size: int = _opt("long side of the output in pixels", 512)
    iterations: int = _opt("optimizer iterations (at the coarsest scale; finer scales run half as many each)", 500)
    preset: str = _opt("layer preset: " + ", ".join(PRESETS), "gatys", choices=tuple(PRESETS))
    content_layers: tuple[str, ...] | None = _opt("content layers (default: the preset's)", None)
    style_layers: tuple[str, ...] | None = _opt("style layers (default: the preset's)", None)
    style_layer_weights: tuple[float, ...] | None = _opt(
        "relative weight per style layer (default: equal); normalized to sum to 1", None)
    content_weight: float = _opt("weight of the content loss", 1.0)
    style_weight: float = _opt("weight of the style loss", 30.0)
    tv_weight: float = _opt("weight of the total-variation (smoothness) loss", 1.0)
    range_weight: float = _opt("weight of the penalty on pixels outside [0, 1] (L-BFGS does not clamp)", 1000.0)
    tv_kind: str = _opt("total variation: squared, or beta (TV^1.25)", "squared", choices=TV_KINDS)
    style_norm: str = _opt("loss normalization: relative (each layer's error relative to its target, "
                           "content too), or the raw Gram forms gatys (1/(4C²(HW)²)), hw, chw", "relative",
                           choices=GRAM_NORMS)
    optimizer: str = _opt("optimizer", "lbfgs", choices=OPTIMIZERS)
    lr: float | None = _opt("learning rate (default: lbfgs 1.0, adam 0.02, sgd 0.05)", None)
    lr_decay: float = _opt("exponential learning-rate decay per iteration for adam/sgd", 1.0)
    lbfgs_history: int = _opt("L-BFGS memory (pairs kept)", 100)
    init: str = _opt("start image: content, noise, style, fast (the one-pass result of the built-in "
                     "arbitrary model for these styles), fast:MODEL (of a feed-forward or arbitrary model, a "
                     "built-in name or a file), or an image file. From a built-in feed-forward style's result, "
                     "5-10 iterations came within 2x of the style loss 300 reach from the content, 20 within "
                     "1.2-1.4x (bench/fast.py)", "content")
    pooling: str = _opt("pooling in the network: max, or avg (smoother, as in Gatys et al.)", "max",
                        choices=POOLINGS)
    net: str = _opt("backbone (vgg19 = original ImageNet weights, bundled; on nets without VGG layer names "
                    "the presets use the first five block outputs)", "vgg19")
    style_blend: tuple[float, ...] | None = _opt(
        "weights of the style images (default: equal); normalized to sum to 1", None)
    style_scale: float = _opt("size of the style image(s) relative to the output size", 1.0)
    preserve_color: str = _opt("keep the content's colours: none, luminance (style transfer on "
                               "luminance only), histogram (match the style's colours first)", "none",
                               choices=PRESERVE_COLOR)
    scales: int = _opt("coarse-to-fine scales (0 = automatic: one per doubling above 768 px)", 0)
    save_every: int = _opt("write the current image every N iterations (0 = never)", 0)
    seed: int = _opt("random seed (noise init)", 0)
    device: str = _opt("device: auto, cpu, cuda, cuda:N, mps", "auto")
    precision: str = _opt("arithmetic: auto (tf32 on CUDA; bf16 on CPUs with native bf16, else fp32), "
                          "fp32, tf32, bf16", "auto",
                          choices=PRECISIONS)
    cuda_graph: bool = _opt("replay iterations as a CUDA graph on GPU (L-BFGS)", True)

    # ---- derived -----------------------------------------------------------------------------
    def layers(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        preset = PRESETS[self.preset]
        return (_names(self.content_layers or preset["content"]), _names(self.style_layers or preset["style"]))

    def layer_weights(self) -> tuple[float, ...]:
        _, style_layers = self.layers()
        w = self.style_layer_weights or (1.0,) * len(style_layers)
        total = sum(w)
        return tuple(x / total for x in w)

    def blend(self, n_styles: int) -> tuple[float, ...]:
        w = self.style_blend or (1.0,) * n_styles
        if len(w) != n_styles:
            raise ConfigError(f"--style-blend has {len(w)} weight(s) for {n_styles} style image(s); "
                              "give one weight per style image")
        total = sum(w)
        return tuple(x / total for x in w)

    def stage_sizes(self) -> list[int]:
        """Long side per stage, coarse to fine; each stage doubles the previous (never below 16 px;
        stages that would repeat a size are merged)."""
        n = self.scales or 1 + max(0, math.ceil(math.log2(self.size / 768)))
        sizes = [max(16, round(self.size / 2 ** (n - 1 - k))) for k in range(n)]
        return sorted(set(sizes))

    def stage_iterations(self, stages: int | None = None) -> list[int]:
        """Full iterations at the coarsest stage, half as many at each finer one (at least 50)."""
        n = len(self.stage_sizes()) if stages is None else stages
        return [max(self.iterations >> k, min(50, self.iterations)) for k in range(n)]

    def to_dict(self) -> dict:
        return asdict(self)

    # ---- validation --------------------------------------------------------------------------
    def validate(self) -> StyleConfig:
        """Check every field; ConfigError with a one-line message on the first problem."""
        def positive(name, value, allow_zero=False):
            ok = isinstance(value, (int, float)) and math.isfinite(value) and (
                value >= 0 if allow_zero else value > 0)
            if not ok:
                raise ConfigError(f"--{name.replace('_', '-')} must be a {'non-negative' if allow_zero else 'positive'}"
                                  f" number, not {value!r}")

        def whole(name, value, high, low=None):
            """An int (not a bool), at most `high` (allocations scale with these); signs are
            checked by positive() below unless `low` is given."""
            flag = f"--{name.replace('_', '-')}"
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{flag} must be a whole number, not {value!r}")
            if value > high or (low is not None and value < low):
                raise ConfigError(f"{flag} must be a whole number from {1 if low is None else low} to {high}, not {value!r}")

        whole("size", self.size, 10**9)  # the real limit gets a clearer message below
        whole("iterations", self.iterations, 1_000_000)
        whole("lbfgs_history", self.lbfgs_history, 1000)
        whole("save_every", self.save_every, 1_000_000, low=0)  # 0: never
        whole("scales", self.scales, 8, low=0)  # 0: automatic
        whole("seed", self.seed, 2**63 - 1, low=0)
        positive("size", self.size)
        if self.size > 8192:
            raise ConfigError(f"--size {self.size} is too large (at most 8192 px)")
        if self.size < 32:
            raise ConfigError(f"--size {self.size} is too small (at least 32 px: VGG pools five times)")
        positive("iterations", self.iterations)
        for name in ("content_weight", "style_weight", "tv_weight", "range_weight"):
            positive(name, getattr(self, name), allow_zero=True)
        positive("style_scale", self.style_scale)
        if self.style_scale * self.size > 8192:
            raise ConfigError(f"--style-scale {self.style_scale} makes the style {self.style_scale * self.size:.0f} px "
                              "(at most 8192)")
        positive("lbfgs_history", self.lbfgs_history)
        positive("save_every", self.save_every, allow_zero=True)
        positive("scales", self.scales, allow_zero=True)
        if self.lr is not None:
            positive("lr", self.lr)
            check_max_lr(self.lr)
        if not (isinstance(self.lr_decay, (int, float)) and 0 < self.lr_decay <= 1):
            raise ConfigError(f"--lr-decay must be in (0, 1], not {self.lr_decay!r}")
        check_choices(self)
        if not isinstance(self.cuda_graph, bool):  # ("no" counted as True)
            raise ConfigError(f"cuda_graph must be True or False, not {self.cuda_graph!r}")
        # What the chosen optimizer has no use for was ignored without a word.
        if self.lr_decay != StyleConfig.lr_decay and self.optimizer == "lbfgs":
            raise ConfigError("--lr-decay applies to --optimizer adam and sgd only; L-BFGS takes fixed steps: "
                              "drop it or change the optimizer")
        if self.lbfgs_history != StyleConfig.lbfgs_history and self.optimizer != "lbfgs":
            raise ConfigError(f"--lbfgs-history applies to --optimizer lbfgs only, not {self.optimizer}: drop it "
                              "or change the optimizer")
        for name in ("style_layer_weights", "style_blend"):
            values = getattr(self, name)
            if values is not None:
                if not isinstance(values, (list, tuple)):
                    raise ConfigError(f"--{name.replace('_', '-')} must be a list of weights, not {values!r}")
                if not values:
                    raise ConfigError(f"--{name.replace('_', '-')} needs at least one weight")
                for v in values:
                    positive(name, v, allow_zero=True)
                if sum(values) <= 0:
                    raise ConfigError(f"--{name.replace('_', '-')} must not all be zero")
        if fast_init_model(self.init) == "" and self.init != FAST_INIT:
            raise ConfigError("--init fast:MODEL needs a model after the colon: a built-in name (convscope "
                              "styles) or a .safetensors file")
        if not isinstance(self.init, (str, os.PathLike)):
            raise ConfigError(f"--init must be content, noise, style, fast, fast:MODEL or an image file's path, "
                              f"not {type(self.init).__name__}")
        for name in ("content_layers", "style_layers"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) or (
                    isinstance(value, (list, tuple)) and all(isinstance(n, str) for n in value))):
                raise ConfigError(f"--{name.replace('_', '-')} must be a list of layer names, not {value!r}")
        content_layers, style_layers = self.layers()
        for flag, names in (("--content-layers", content_layers), ("--style-layers", style_layers)):
            repeated = sorted({n for n in names if names.count(n) > 1})  # (counted twice without a word)
            if repeated:
                raise ConfigError(f"{flag} names {', '.join(repeated)} more than once; give each layer once "
                                  "(--style-layer-weights and --content-weight weigh them)")
        # Without --style-layers a net other than the registry's VGGs gets its own blocks
        # (gatys.preset_layers), which are counted there.
        if self.style_layers or _registry_vgg(self.net):
            check_layer_weights(self.style_layer_weights, style_layers)
        if not style_layers and self.style_weight > 0:
            raise ConfigError("no style layers given")
        return self

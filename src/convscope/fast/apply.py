"""Stylizing with trained networks: a per-style TransformerNet, or AdaIN with any style image.

Both take RGB images of any size and return an image of exactly the content's size (or of the
`size` asked for). Inference runs in bf16 where the device has it natively (the networks were
trained under bf16 autocast), else fp32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch
from PIL import Image
from torch.nn import functional as F

from .. import colour, images
from ..devices import cpu_has_native_bf16, resolve_device
from ..argcheck import as_image, check_image_batch, check_image_values, config_of
from ..errors import ConfigError, ImageError
from .config import MAX_SIZE, MAX_STYLE_SIZE, MAX_STYLES, MIN_SIDE, FastConfig, blend_weights
from .models import ARBITRARY_BUILTIN, ARBITRARY_KIND, STYLE_KIND, StyleModel, load_model, read_header, resolve
from .nets import Encoder, HalfResTransformerNet, LiteAdaIN, adain, channel_stats

# The FastConfig options only the other method uses, by method ("fast": FastStylizer).
OTHER_METHODS_OPTIONS = {"fast": ("alpha", "style_size"), "arbitrary": ("strength",)}


def _checked_config(config, method: str) -> FastConfig:
    """The validated config; an option only the other method uses, set, is a ConfigError (it was
    ignored without a word)."""
    if config is not None:
        config_of(config, FastConfig)
    config = (config or FastConfig()).validate()
    for name in OTHER_METHODS_OPTIONS[method]:
        if getattr(config, name) != getattr(FastConfig, name):
            users = "ArbitraryStylizer (the arbitrary method)" if method == "fast" else "FastStylizer (--model)"
            raise ConfigError(f"FastConfig.{name} is for {users} only; leave it at {getattr(FastConfig, name)!r} "
                              "here")
    return config


def _pil(x, what: str) -> Image.Image:
    """A PIL image as it is (the style statistics are cached by image); paths and tensors converted."""
    return x if isinstance(x, Image.Image) else as_image(x, what)


def resolve_precision(device: torch.device, precision: str) -> str:
    """"auto" -> "bf16" where the device computes bf16 natively (CUDA with bf16, CPUs with AVX512-BF16
    or AMX), else "fp32"; other values as given. Training and inference resolve it the same way."""
    if precision != "auto":
        return precision
    native = (device.type == "cuda" and torch.cuda.is_bf16_supported()) or \
             (device.type == "cpu" and cpu_has_native_bf16())
    return "bf16" if native else "fp32"


def layout_for(device: torch.device) -> torch.memory_format:
    """The memory layout the style networks run in: channels-last on the CPU, where oneDNN is faster
    that way (measured: the arbitrary method 1.1x at 512 px and 1.45x at 1024 px, the feed-forward one
    1.24-1.37x image in to image out, training steps 1.8x: bench/train_style_cpu.py); NCHW on GPUs,
    where the speeds were measured in it. 2-core Xeon with AMX, bf16."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def _dtype(device: torch.device, precision: str) -> torch.dtype:
    return torch.bfloat16 if resolve_precision(device, precision) == "bf16" else torch.float32


def _content_tensor(content: Image.Image, size: int, device) -> torch.Tensor:
    img = images.resize_long_side(content, size) if size else images.to_rgb(content)
    return images.pil_to_tensor(img, device)


def _scaled(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(w, h) resized to `long_side` as images.resize_long_side rounds it (0 = as it is)."""
    return images.long_side_size(size, long_side) if long_side and min(size) >= 1 else size


def _least_long_side(size: tuple[int, int]) -> int:
    """The smallest long side at which an image of `size` keeps MIN_SIDE px on its short side."""
    if min(size) < 1:
        return 2**31  # an empty image has none
    n = max(1, math.floor((MIN_SIDE - 0.5) * max(size) / min(size)))
    while min(_scaled(size, n)) < MIN_SIDE:
        n += 1
    return n


def _check_content(content: Image.Image, size: int, label: str = "") -> None:
    """The content resized to `size` (0: as it is) must keep MIN_SIDE px a side. Blame what the
    user can change: the --size option when it shrank an image that is large enough, else the image."""
    shown = _scaled(content.size, size)
    if min(shown) >= MIN_SIDE:
        return
    w, h = content.size
    what = f"the content image {label}".strip()
    if min(w, h) < 1:
        raise ImageError(f"{what} is empty ({w}x{h})")
    need = _least_long_side(content.size)
    if size and min(w, h) >= MIN_SIDE:  # the image would do at its own size
        fix = f"use --size {need} or more" if need <= MAX_SIZE else "use --size 0 (its own size)"
        raise ConfigError(f"--size {size} makes {what} {shown[0]}x{shown[1]}: the arbitrary method needs at least "
                          f"{MIN_SIDE} pixels a side; {fix}")
    fix = f"use a larger image (or --size {need} or more to enlarge it)" if need <= MAX_SIZE else \
        "use a less elongated image"
    # An ImageError: the image is at fault (a folder run skips it and goes on).
    raise ImageError(f"{what} is {w}x{h}" + (f" ({shown[0]}x{shown[1]} at --size {size})" if size else "")
                     + f": the arbitrary method needs at least {MIN_SIDE} pixels a side; {fix}")


def _check_style(style: Image.Image, style_size: int, what: str) -> None:
    """A style image resized to `style_size` must keep MIN_SIDE px on its short side (VGG's pooling
    fails on less: a traceback, or a resize error that did not say which image)."""
    shown = _scaled(style.size, style_size)
    if min(shown) >= MIN_SIDE:
        return
    w, h = style.size
    if min(w, h) < 1:
        raise ImageError(f"{what} is empty ({w}x{h})")
    need = _least_long_side(style.size)
    fix = f"use --style-size {need} or more" if need <= MAX_STYLE_SIZE else "use a less elongated image"
    raise ConfigError(f"{what} ({w}x{h}) is too elongated or small: at --style-size {style_size} it is "
                      f"{shown[0]}x{shown[1]}, and the arbitrary method needs at least {MIN_SIDE} pixels a side; {fix}")


def _finish(stylized: torch.Tensor, content: torch.Tensor, preserve: str, strength: float = 1.0) -> torch.Tensor:
    out = stylized.float().clamp(0, 1)
    if preserve == "luminance":
        out = colour.luminance_transfer(out, content)
    elif preserve == "histogram":
        out = colour.match_histogram(out, content)
    if strength < 1.0:
        out = torch.lerp(content, out, strength)
    return out.clamp(0, 1)


def _check_batch(content: torch.Tensor, batch: int | None = None) -> None:
    """The content batch's shape and dtype; its values too where it is on the CPU. On a GPU the
    value check (a reduction read back) would make every call wait for the device: a video or a
    benchmark loop lost its overlap. Images that came in as files or PIL images are in range anyway."""
    check_image_batch(content, "the content batch", batch=batch)
    if content.shape[0] < 1:  # instance norm fails on it deep inside torch (an IndexError)
        raise ImageError(f"the content batch holds no images ({list(content.shape)})")
    if content.device.type == "cpu":
        check_image_values(content, "the content batch")


class FastStylizer:
    """A loaded feed-forward style model, ready for many images (the net is loaded once)."""

    def __init__(self, model: str | StyleModel, config: FastConfig | None = None):
        self.config = _checked_config(config, "fast")
        self.device = resolve_device(self.config.device)
        self.dtype = _dtype(self.device, self.config.precision)
        self.model = model if isinstance(model, StyleModel) else load_model(model, STYLE_KIND, self.device)
        self.net = self.model.net.to(self.device, self.dtype)
        # On the CPU the same function computed on half-resolution grids is ~1.3x faster (see
        # HalfResTransformerNet); GPUs keep the plain network, whose speed there is the measured one.
        self.runner = HalfResTransformerNet(self.net).eval() if self.device.type == "cpu" else self.net
        self.layout = layout_for(self.device)
        self.runner.to(memory_format=self.layout)

    @torch.inference_mode()
    def tensor(self, content: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] -> stylized, same shape, float32."""
        _check_batch(content)
        y = self.runner(content.to(self.device, self.dtype).contiguous(memory_format=self.layout)).float()
        return _finish(y, content.to(self.device).float(), self.config.preserve_color, self.config.strength)

    def __call__(self, content: Image.Image) -> Image.Image:
        """`content` (a PIL image, a path or a float tensor [1, 3, H, W]) stylized, at config.size."""
        content = _pil(content, "the content image")
        if min(content.size) < 1:
            raise ImageError(f"the content image is empty ({content.width}x{content.height})")
        return images.tensor_to_pil(self.tensor(_content_tensor(content, self.config.size, self.device)))


def _quantize_mask(mask: Image.Image, size: tuple[int, int], n_styles: int) -> torch.Tensor:
    """A region map [H, W] of style indices: the mask's grey levels are split into n_styles
    evenly spaced bands, black -> the first style, white -> the last."""
    grey = images.pil_to_tensor(mask.convert("L").convert("RGB").resize(size, Image.Resampling.NEAREST))[0, 0]
    return (grey * (n_styles - 1)).round().long().clamp(0, n_styles - 1)


MASK_ASPECT_TOLERANCE = 0.01  # relative, on top of the rounding a mask saved at another size carries


def _check_mask_shape(mask: Image.Image, w: int, h: int, label: str) -> None:
    """A mask is stretched to the content's size, which is fine for one drawn at another resolution,
    but one of another aspect ratio (a rotated or wrong file) would put the regions in the wrong
    places without a word. Each side's rounding to whole pixels moves the aspect by up to 1/side."""
    mw, mh = mask.size
    tolerance = MASK_ASPECT_TOLERANCE + 1 / mw + 1 / mh + 1 / w + 1 / h
    if abs((mw / mh) / (w / h) - 1) > tolerance:
        raise ConfigError(f"the mask is {mw}x{mh} and {f'the content image {label}'.strip()} {w}x{h}: their "
                          f"shapes differ (aspect {mw / mh:.3g} against {w / h:.3g}), so the regions would not line "
                          "up; give a mask of the content's shape (any size)")


def _labels(labels) -> list[str]:
    """The images' names for messages: None, or a list of strings (content first, then styles)."""
    if labels is None:
        return []
    if isinstance(labels, str) or not isinstance(labels, Sequence) or not all(isinstance(x, str) for x in labels):
        raise ConfigError(f"labels must be a list of names (content first, then the styles), not {labels!r}")
    return list(labels)


def _style_images(styles, mask) -> tuple[list[Image.Image], Image.Image | None]:
    """Styles (one or a list) and the mask as PIL images: PIL ones as they are (the statistics cache
    knows a style by its image), paths and tensors loaded."""
    if not isinstance(styles, (list, tuple)):
        styles = [styles]
    return [_pil(s, f"style image {i}") for i, s in enumerate(styles, start=1)], \
        None if mask is None else _pil(mask, "the mask")


STYLE_CACHE = 16  # style images whose statistics an ArbitraryStylizer keeps (a video's few, a blend's)


class ArbitraryStylizer:
    """AdaIN: the VGG19 encoder (to relu4_1) and a trained decoder; any style image, one pass. An
    AdaIN-lite model (LiteAdaIN) brings its own encoder, used for the content and the styles."""

    def __init__(self, decoder: str | StyleModel = ARBITRARY_BUILTIN, config: FastConfig | None = None):
        self.config = _checked_config(config, "arbitrary")
        self.device = resolve_device(self.config.device)
        self.dtype = _dtype(self.device, self.config.precision)
        self.model = decoder if isinstance(decoder, StyleModel) else load_model(decoder, ARBITRARY_KIND, self.device)
        # (On the CPU max pooling above all: 2 ms instead of 37 ms for 64x384x512 in bf16 channels-last.)
        self.layout = layout_for(self.device)
        net = self.model.net.to(self.device, self.dtype, memory_format=self.layout)
        if isinstance(net, LiteAdaIN):
            self.encoder, self.decoder = net.encoder, net.decoder
        else:
            self.decoder = net
            self.encoder = Encoder().to(self.device, self.dtype, memory_format=self.layout)
        self._stats: dict[int, tuple[Image.Image, tuple[torch.Tensor, torch.Tensor]]] = {}

    def _net_input(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.dtype, memory_format=self.layout)

    @torch.inference_mode()
    def style_stats(self, style: Image.Image, content: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Channel means and stds of a style image at relu4_1. Cached per style image (video
        frames reuse them), except with histogram colour preservation, which depends on the content."""
        histogram = self.config.preserve_color == "histogram" and content is not None
        cached = self._stats.get(id(style))
        if cached is not None and cached[0] is style and not histogram:
            return cached[1]
        s = images.pil_to_tensor(images.resize_long_side(style, self.config.style_size), self.device)
        if self.config.preserve_color == "histogram" and content is not None:
            s = colour.match_histogram(s, content)  # the style in the content's colours
        stats = channel_stats(self.encoder(self._net_input(s))["relu4_1"])
        if not histogram:
            self._stats[id(style)] = (style, stats)  # the image is kept, so its id stays unique
            while len(self._stats) > STYLE_CACHE:  # a loop over new images must not grow it for ever
                del self._stats[next(iter(self._stats))]  # the oldest first
        return stats

    @torch.inference_mode()
    def tensor(self, content: torch.Tensor, styles: Sequence[Image.Image], weights: Sequence[float] | None = None,
               mask: Image.Image | None = None, labels: Sequence[str] | None = None) -> torch.Tensor:
        """Content [1, 3, H, W] in [0, 1] styled by `styles` (one or a list; each a PIL image, a path
        or a float tensor [1, 3, H, W], as is `mask`; blended by `weights`, or by region with `mask`)
        -> [1, 3, H, W] float32. `labels` (content first, then styles; e.g. file
        names) name the images in error messages."""
        _check_batch(content, batch=1)
        if styles is not None and not isinstance(styles, (list, tuple)):
            styles = [styles]  # one style: an image, a path or a tensor
        if not styles:
            raise ConfigError("the arbitrary method needs at least one style image")
        if len(styles) > MAX_STYLES:
            raise ConfigError(f"at most {MAX_STYLES} style images, not {len(styles)}")
        if mask is not None and len(styles) < 2:  # one region: the mask would change nothing
            raise ConfigError("a mask assigns regions of the content to two or more styles; give at least two "
                              "style images, or no mask")
        weights = blend_weights(weights, len(styles), mask is not None)
        styles, mask = _style_images(styles, mask)
        labels = _labels(labels)
        labels += [""] * (1 + len(styles) - len(labels))
        content = content.to(self.device).float()
        h, w = content.shape[-2:]
        if min(h, w) < MIN_SIDE:
            raise ConfigError(f"{f'the content image {labels[0]}'.strip()} is {w}x{h}: the arbitrary method needs "
                              f"at least {MIN_SIDE} pixels a side")
        for i, (style, label) in enumerate(zip(styles, labels[1:]), start=1):
            _check_style(style, self.config.style_size, f"the style image {label or i}")
        if mask is not None:
            _check_mask_shape(mask, w, h, labels[0])
        # VGG halves three times before relu4_1 and the decoder doubles three times: pad to /8.
        ph, pw = (-h) % 8, (-w) % 8
        x = F.pad(content, (0, pw, 0, ph), mode="reflect" if min(h, w) > 8 else "replicate")
        feats = self.encoder(self._net_input(x))["relu4_1"].float()
        stats = [self.style_stats(s, content) for s in styles]
        if mask is None:
            target = sum(wt * adain(feats, m, s) for wt, (m, s) in zip(weights, stats))
        else:
            regions = _quantize_mask(mask, (feats.shape[-1], feats.shape[-2]), len(styles)).to(self.device)
            target = feats.clone()
            for k, (m, s) in enumerate(stats):
                sel = regions == k
                if sel.any():
                    region = feats[..., sel]                             # [1, C, P]
                    var, mean = torch.var_mean(region, dim=-1, keepdim=True, unbiased=False)
                    target[..., sel] = (region - mean) / (var + 1e-5).sqrt() * s[..., 0] + m[..., 0]
        alpha = self.config.alpha
        y = self.decoder(self._net_input(torch.lerp(feats, target, alpha))).float()
        if alpha < 1.0:
            # Put back (1 - alpha) of what the decoder loses when it only reconstructs the photo, so
            # alpha 0 gives the photo itself and small alphas stay close to it, whatever the
            # decoder's reconstruction error (one more decoder pass; none at alpha 1).
            y = y + (1.0 - alpha) * (x - self.decoder(self._net_input(feats)).float())
        y = y[..., :h, :w]
        return _finish(y, content, "luminance" if self.config.preserve_color == "luminance" else "none")

    def __call__(self, content: Image.Image, styles: Sequence[Image.Image], weights: Sequence[float] | None = None,
                 mask: Image.Image | None = None, labels: Sequence[str] | None = None) -> Image.Image:
        """`content` (at config.size) styled by `styles` (one or a list); each a PIL image, a path or a
        float tensor [1, 3, H, W], as is `mask`; `labels` as for `tensor`."""
        content = _pil(content, "the content image")
        styles, mask = _style_images(styles, mask)
        _check_content(content, self.config.size, (_labels(labels) or [""])[0])
        x = _content_tensor(content, self.config.size, self.device)
        return images.tensor_to_pil(self.tensor(x, styles, weights, mask, labels))


def one_pass_image(model: str, content: Image.Image, styles: Sequence[Image.Image],
                   weights: Sequence[float] | None = None, size: int = 0, device: str = "auto",
                   preserve_color: str = "none", labels: Sequence[str] | None = None) -> Image.Image:
    """One pass of `model` (a built-in name or a file; "" = the built-in arbitrary model) over
    `content`, at long side `size` (0 = the content's own): a feed-forward model paints its own style
    and ignores `styles`; an arbitrary model uses `styles`, blended by `weights`. What the
    optimization-based engine starts from with --init fast (Gatys: `style/gatys.py`). `labels`
    (content first, then styles) name the images in error messages."""
    path = resolve(model or ARBITRARY_BUILTIN)
    config = FastConfig(size=size, device=device, preserve_color=preserve_color)
    if read_header(path).get("kind") == STYLE_KIND:
        return FastStylizer(str(path), config)(content)
    # The optimization has no --style-size to offer: a style too thin for the default one is
    # encoded at the smallest size that keeps it MIN_SIDE px wide.
    need = max((_least_long_side(s.size) for s in styles), default=0)
    if need > config.style_size:
        config = replace(config, style_size=min(need, MAX_STYLE_SIZE))
    return ArbitraryStylizer(str(path), config)(content, styles, weights, labels=labels)  # other kinds: ModelError


def run_config(stylizer: FastStylizer | ArbitraryStylizer, model: str, weights: Sequence[float] | None = None) -> dict:
    """The config to save with a one-pass output: what ran (the method, the model as named, device and
    precision resolved, an arbitrary run's blend weights), without the options the other method uses."""
    fast = isinstance(stylizer, FastStylizer)
    other = OTHER_METHODS_OPTIONS["fast" if fast else "arbitrary"]
    saved = {k: v for k, v in stylizer.config.to_dict().items() if k not in other}
    saved.update(device=str(stylizer.device), precision="bf16" if stylizer.dtype == torch.bfloat16 else "fp32")
    if not fast:
        saved["style_blend"] = [float(w) for w in weights] if weights else None
    return {"method": "fast" if fast else "arbitrary", "model": model, **saved}

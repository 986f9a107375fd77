"""Checks of the Python API's arguments: a one-line UserError that names the argument, where a
wrong kind of value would otherwise fail deep inside an engine (or, for a flag, silently count as
True; a [3, H, W] batch would run with its rows as colours). The config dataclasses check their own
fields; these are the arguments around them: configs, callbacks, flags and images."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from . import images
from .errors import ConfigError, ImageError


def _a(name: str) -> str:
    return f"an {name}" if name[:1] in "AEIOU" else f"a {name}"


def config_of(config, *kinds: type, note: str = ""):
    """`config` if it is an instance of one of `kinds`, else a ConfigError (a dict gets the hint to
    build one from it; `note` is added for any other value)."""
    if isinstance(config, kinds):
        return config
    names = " or ".join(k.__name__ for k in kinds)
    hint = "; use " + " or ".join(f"{k.__name__}(**d)" for k in kinds) if isinstance(config, dict) else note
    raise ConfigError(f"config must be {_a(names)}, not {type(config).__name__}{hint}")


def callback_or_none(callback, takes: str, name: str = "callback"):
    """`callback` if it is None or callable, else a ConfigError (it would fail only at its first call)."""
    if callback is not None and not callable(callback):
        raise ConfigError(f"{name} must be a function taking {_a(takes)} (or None), not {type(callback).__name__}")
    return callback


def flag(value, name: str) -> bool:
    """`value` if it is a bool, else a ConfigError ("no" would count as True)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, not {value!r}")
    return value


def whole_number(value, name: str, lo: int = 0):
    """`value` if it is an int (not a bool) of at least `lo`, else a ConfigError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"{name} must be a whole number of {lo} or more, not {value!r}")
    return value


def check_loaded_net(net) -> None:
    """ConfigError unless `net` (an engine's optional already-loaded net) is None or a torch module with
    the nets' named-layer interface (resolve, features, stride_of)."""
    if net is not None and not isinstance(net, torch.nn.Module):
        raise ConfigError(f"net must be a loaded net (convscope.get_net(...)) or None, not {type(net).__name__}; "
                          "to choose a net by name set the config's net")
    # A plain torch module lacks the named-layer interface every engine calls (an AttributeError deep inside).
    if net is not None and not all(callable(getattr(net, a, None)) for a in ("resolve", "features", "stride_of")):
        raise ConfigError(f"net must be a loaded net (convscope.get_net(...)) or None, not a plain "
                          f"{type(net).__name__} module without named layers; wrap a classifier in "
                          "convscope.nets.HookedNet or set the config's net")


def path_or_none(value, name: str, what: str = "a folder path"):
    """`value` if it is None, a str or a PathLike, else a ConfigError naming the argument."""
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"{name} must be {what} (or None), not {type(value).__name__}")
    return value


def as_image(x, what: str = "image") -> Image.Image:
    """An image argument of the Python API as 8-bit RGB PIL: a path (str or PathLike, loaded with
    load_image), a PIL image (any mode), or a float tensor [1, 3, H, W] / [3, H, W] in [0, 1]
    (see check_image_values). Anything else is an ImageError naming the argument (`what`)."""
    if isinstance(x, Image.Image):
        return images.to_rgb(x)
    if isinstance(x, (str, os.PathLike)):
        return images.load_image(x)
    if isinstance(x, torch.Tensor):
        if x.dim() == 3:
            x = x.unsqueeze(0)
        return images.tensor_to_pil(check_image_values(check_image_batch(x, what, batch=1), what))
    hint = " (PIL.Image.fromarray converts a uint8 HxWx3 array)" if isinstance(x, np.ndarray) else ""
    raise ImageError(f"{what} must be a file path, a PIL image or a float tensor [1, 3, H, W] in [0, 1], "
                     f"not {type(x).__name__}{hint}")


def check_image_batch(x, what: str = "image batch", batch: int | None = None) -> torch.Tensor:
    """`x` if it is an image batch as the API takes it: a float tensor [N, 3, H, W] (RGB, values in
    [0, 1]), H and W at least 1, N == `batch` when given; else an ImageError naming `what` and the fix.
    Only the metadata is checked (no pass over the values: engines call this inside loops)."""
    if not isinstance(x, torch.Tensor):
        raise ImageError(f"{what} must be a float tensor [N, 3, H, W] in [0, 1], not {type(x).__name__}")
    shape = list(x.shape)
    if x.dim() == 3 and shape[0] == 3:
        raise ImageError(f"{what} must be [N, 3, H, W], got {shape}; add the batch dimension: x.unsqueeze(0)")
    if x.dim() == 4 and shape[1] != 3 and shape[3] == 3:
        raise ImageError(f"{what} must be [N, 3, H, W] (channels first), got {shape}; use x.permute(0, 3, 1, 2)")
    if x.dim() != 4 or shape[1] != 3:
        raise ImageError(f"{what} must be [N, 3, H, W] with 3 (RGB) channels, got {shape}")
    if batch is not None and shape[0] != batch:
        raise ImageError(f"{what} must hold {batch} image(s), got a batch of {shape[0]} ({shape})")
    if not x.dtype.is_floating_point:
        raise ImageError(f"{what} must be a float tensor in [0, 1], not {x.dtype}; for 0..255 data use x.float() / 255")
    if min(shape[2:]) < 1:
        raise ImageError(f"{what} is empty ({shape[3]}x{shape[2]} pixels)")
    return x


# How far outside [0, 1] a tensor's values may stray and still count as an image in [0, 1] (then
# clipped): resampling (bicubic overshoots at hard edges) leaves a little; the mistakes this catches
# ([-1, 1] or ImageNet-normalized tensors, 0..255 floats) are far outside it.
RANGE_SLACK = 0.25


def check_image_values(x: torch.Tensor, what: str = "image") -> torch.Tensor:
    """`x` (a float image tensor) if its values are finite and within [0, 1] (give or take
    RANGE_SLACK), else an ImageError naming `what` and the likely fix. A pass over the values: for
    images that enter the API, not for the engines' inner loops (their iterates may stray further)."""
    if x.is_meta:
        raise ImageError(f"{what} is a meta tensor (a shape without pixel values)")
    v = x.detach()
    if v.numel() == 0:
        return x
    if not bool(torch.isfinite(v).all()):
        raise ImageError(f"{what} holds NaN or infinite values")
    lo, hi = (float(m) for m in torch.aminmax(v))
    if lo < -RANGE_SLACK or hi > 1.0 + RANGE_SLACK:
        hint = ("for 0..255 data use x / 255" if lo >= -RANGE_SLACK else
                "for a [-1, 1] tensor use (x + 1) / 2; undo any mean/std normalization")
        raise ImageError(f"{what} has values from {lo:.3g} to {hi:.3g}, but images are floats in [0, 1]; {hint}")
    return x

"""Images in and out: safe loading, resizing, tensor conversion, colour ops, atomic saving.

Conventions (see DESIGN.md): tensors are float in [0, 1], RGB, NCHW; PIL images are 8-bit RGB.
Every problem a user can cause (missing, corrupt or huge file, unwritable output) raises a
`convscope.errors` exception with a one-line message; PIL/OS tracebacks never reach the user.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from convscope.errors import ConfigError, ImageError

# Names, paths and atomic writes live in imagefiles.py (no torch there: the CLI checks paths with it
# before PyTorch loads); images.* stays the one place callers import image operations from.
from .imagefiles import (IMAGE_EXTENSIONS, WRITABLE_FORMATS, check_output_file, check_output_path, is_image_name,
                         list_image_files, readable_file, sidecar_path, visible, write_atomic)

# Colour ops live in colour.py; images.* stays the one place callers import image operations from.
from .colour import luminance_transfer, match_color_stats, match_histogram, rgb_to_yiq, yiq_to_rgb

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "PNG_METADATA_KEY", "WRITABLE_FORMATS", "check_output_path",
           "is_image_name", "list_image_files", "load_image",
           "luminance_transfer", "match_color_stats", "match_histogram", "pil_to_tensor", "read_png_metadata",
           "resize_long_side", "resize_to_pixels", "rgb_to_yiq", "save_image", "sidecar_path",
           "tensor_to_pil", "to_rgb", "yiq_to_rgb"]

# 100 megapixels (e.g. 10000x10000): far above any image a CNN here needs, small enough that a
# decoded RGB image (300 MB) cannot exhaust a laptop. Checked from the header, before decoding.
DEFAULT_MAX_PIXELS = 100_000_000

# The largest long side a resize may make (fast stylize's --size limit, the highest any command
# allows): beyond it the decoded result alone would exhaust memory (MemoryError, or the OOM killer).
MAX_RESIZE_SIDE = 16384

# Metadata key of the PNG text chunk (and of nothing else: the sidecar holds the same dict).
PNG_METADATA_KEY = "convscope"

# What PIL raises while decoding a damaged file. Several plugins raise SyntaxError, struct.error,
# IndexError or zlib.error instead of OSError on malformed data, so all of them mean "corrupt".
_DECODE_ERRORS = (OSError, SyntaxError, EOFError, ValueError, IndexError, struct.error, zlib.error)



# --------------------------------------------------------------------------------------- loading

def load_image(path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Load any still or animated image file as a fully decoded 8-bit RGB PIL image.

    EXIF orientation is applied first; animated files give their first frame; alpha is composited
    over white; 16-bit and float data are rescaled (not clipped) to 0..255.
    `max_pixels` (width*height) is checked from the header before any pixel is decoded; None
    disables our limit (PIL's own hard guard, 2 * Image.MAX_IMAGE_PIXELS, still applies).
    """
    if max_pixels is not None and (not isinstance(max_pixels, numbers.Integral) or max_pixels <= 0):
        raise ConfigError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    p = readable_file(path)
    with _decoding(p, max_pixels) as im:
        _check_pixel_count(p, im.size, max_pixels)
        im.load()  # frame 0 of an animation is the one selected after open
        return _upright_rgb(im)


def check_image_header(path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """What load_image checks before it decodes a pixel (a readable image file, within
    `max_pixels`), with its ImageErrors; the (width, height) from the header. Nothing is decoded."""
    p = readable_file(path)
    with _decoding(p, max_pixels) as im:
        _check_pixel_count(p, im.size, max_pixels)
        return im.size


@contextlib.contextmanager
def _decoding(p: Path, max_pixels: int | None):
    """Open `p` with PIL and turn every failure, inside the `with` body too, into an ImageError."""
    try:
        with warnings.catch_warnings():
            # PIL warns above Image.MAX_IMAGE_PIXELS (~89 Mpx). Our explicit check against
            # max_pixels is the one rule that decides, so the warning must neither print nor,
            # when a caller allows more, block the load. (Its hard error above 2x still does.)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            ignore_damaged_exif()
            with Image.open(p) as im:
                yield im
    except UnidentifiedImageError:
        kinds = "JPEG, PNG, WebP, BMP, TIFF or GIF"
        raise ImageError(f"not an image (or an unsupported format): {p}; use {kinds}") from None
    except Image.DecompressionBombError as exc:
        found = re.search(r"(\d+) pixels", str(exc))  # PIL's message is the only place it says
        count = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        limit = min(2 * (Image.MAX_IMAGE_PIXELS or 0), max_pixels or 2**63)
        raise ImageError(f"image too large: {p} has {count}, over the limit of {limit:,}; shrink it first") from None
    except PermissionError:
        raise ImageError(f"image not found or not readable: {p}; check its permissions") from None
    except MemoryError:
        raise ImageError(f"not enough memory to decode {p}; shrink the image first") from None
    except _DECODE_ERRORS as exc:
        raise _corrupt(p, exc) from None


def _corrupt(p, exc: Exception) -> ImageError:
    """The ImageError for a file PIL failed to decode, with PIL's reason."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    # PIL's own "image file is truncated (16 bytes not processed)" would repeat our first words
    detail = re.sub(r"^image file is truncated \((.*)\)$", r"\1", detail)
    return ImageError(f"image file is truncated or corrupt: {p} ({detail}); re-export or re-download it")


def _check_pixel_count(p: Path, size: tuple[int, int], max_pixels: int | None) -> None:
    """Refuse images over `max_pixels` using the header size only (nothing decoded yet)."""
    w, h = size
    if w < 1 or h < 1:
        raise ImageError(f"image file is truncated or corrupt: {p} claims a size of {w}x{h}")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(
            f"image too large: {p} is {w}x{h} = {w * h:,} pixels, over the limit of "
            f"{max_pixels:,}; shrink it first or raise max_pixels"
        )


def ignore_damaged_exif() -> None:
    """Inside a warnings.catch_warnings() block: silence PIL's "(Possibly) corrupt EXIF data"
    warnings (a JPEG's open reads its EXIF for the DPI; exif_transpose for the orientation). The
    pixels decode all the same and PIL keeps the tags it could read, the orientation among them
    when it comes before the damage; a warning of byte counts in metadata is nothing a user can
    act on, and it reached only stderr (the CLI's, or a web server's log, never the page)."""
    warnings.filterwarnings("ignore", message=r"(possibly )?corrupt exif data", category=UserWarning)


def _exif_upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF Orientation tag. A damaged EXIF block is ignored: the pixels are fine."""
    try:
        with warnings.catch_warnings():
            ignore_damaged_exif()
            return ImageOps.exif_transpose(im)
    except (SyntaxError, ValueError, TypeError, KeyError, struct.error):
        return im.copy()


# ---------------------------------------------------------------------------- mode conversion

def to_rgb(im: Image.Image) -> Image.Image:
    """An in-memory PIL image as `load_image` would return it: EXIF-upright 8-bit RGB, alpha over white.
    An image from Image.open is decoded here: a damaged file is an ImageError, as in load_image."""
    where = getattr(im, "filename", "") or "the image"
    closed = ImageError(f"{where} was closed before it was used; pass it open, or its .copy()")
    if getattr(im, "tile", None) and getattr(im, "fp", False) is None:
        raise closed  # opened in a `with` block that ended before its pixels were read
    try:
        im.load()
    except _DECODE_ERRORS as exc:
        if "closed image" in str(exc):  # PIL's "Operation on closed image" (after .close()): the file is fine
            raise closed from None
        raise _corrupt(where, exc) from None
    return _upright_rgb(im)


def _upright_rgb(im: Image.Image) -> Image.Image:
    """A decoded image as EXIF-upright 8-bit RGB. PIL inverts 8-bit TIFFs stored min-is-white
    (photometric 0: sample 0 is white) but hands 16-bit ones over as stored: inverted here."""
    min_is_white = im.mode.startswith("I;16") and getattr(im, "tag_v2", {}).get(262) == 0
    rgb = _to_rgb(_exif_upright(im))
    return ImageOps.invert(rgb) if min_is_white else rgb


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB, handling alpha, 16-bit and float data correctly."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode.startswith("I;16") or mode == "I":
        # 16-bit data: map 0..65535 onto 0..255 (PIL's convert would clip at 255 instead).
        # Mode "I" (32-bit) is also assumed to hold 16-bit samples, as 16-bit PNG/PGM/TIFF do.
        # A tRNS grey level (a 16-bit PNG's only transparency) is white, as in 8-bit L.
        raw = np.asarray(im)
        arr = raw.astype(np.float64) / 257.0
        if isinstance(im.info.get("transparency"), numbers.Integral):
            arr[raw == im.info["transparency"]] = 255.0
        return _gray_array_to_rgb(arr)
    if mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        # Float images come in two conventions: [0, 1] (scientific tools) and PIL's 0..255.
        # Data at most 1 is read as the former: under the latter it would be black. (A filter's
        # slight undershoot below 0 does not make it 0..255 data; it is clipped to black.)
        if arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        return _gray_array_to_rgb(arr)
    if mode == "La":  # premultiplied: PIL goes to RGBA only through LA (it raised a raw ValueError)
        im, mode = im.convert("LA"), "LA"
    if mode in ("RGBA", "LA", "PA", "RGBa") or "transparency" in im.info:
        return _over_white(im.convert("RGBA"))
    try:
        return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX ...
    except ValueError:
        raise ImageError(f"unsupported image mode {mode!r}; convert the image to RGB") from None


def _gray_array_to_rgb(arr: np.ndarray) -> Image.Image:
    """[H, W] float array on the 0..255 scale -> RGB image with three equal channels."""
    gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))


def _over_white(rgba: Image.Image) -> Image.Image:
    """Composite an RGBA image over white: what transparent areas look like in a browser."""
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


# ----------------------------------------------------------------------------------- resizing

def resize_long_side(img: Image.Image, size: int) -> Image.Image:
    """Scale `img` so that max(width, height) == `size` pixels, keeping the aspect ratio."""
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size <= 0:
        raise ConfigError(f"image size must be a positive whole number of pixels, got {size!r}")
    if size > MAX_RESIZE_SIDE:
        raise ConfigError(f"image size must be at most {MAX_RESIZE_SIDE} pixels on the long side, got {size!r}")
    return _resize(img, long_side_size(_nonempty_size(img), size), f"long side {size} px")


def long_side_size(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(width, height) of a non-empty `size` scaled to `long_side`, rounded as resize_long_side does."""
    w, h = size
    scale = long_side / max(w, h)
    return (long_side, round(h * scale)) if w >= h else (round(w * scale), long_side)


def long_side_for(size: tuple[int, int], short_side: int) -> int:
    """A long side at which a non-empty `size`, resized as resize_long_side does, keeps at least
    `short_side` px on its short side: the exact ratio rounded up, so rounding cannot fall below it
    (the smallest such side, or one more than it)."""
    w, h = size
    return max(short_side, math.ceil(short_side * max(w, h) / max(1, min(w, h))))


def resize_to_pixels(img: Image.Image, pixels: int) -> Image.Image:
    """Scale `img` so that width * height ~= `pixels`, keeping the aspect ratio."""
    if isinstance(pixels, bool) or not isinstance(pixels, numbers.Real) or not pixels > 0:
        raise ConfigError(f"pixel count must be a positive number, got {pixels!r}")
    if not pixels <= MAX_RESIZE_SIDE ** 2:
        raise ConfigError(f"pixel count must be at most {MAX_RESIZE_SIDE ** 2:,} ({MAX_RESIZE_SIDE}x{MAX_RESIZE_SIDE}), "
                          f"got {pixels!r}")
    w, h = _nonempty_size(img)
    scale = math.sqrt(pixels / (w * h))
    return _resize(img, (round(w * scale), round(h * scale)), f"{pixels:,} pixels")


def _nonempty_size(img: Image.Image) -> tuple[int, int]:
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageError(f"cannot resize an empty {w}x{h} image")
    return w, h


def _resize(img: Image.Image, new: tuple[int, int], target: str) -> Image.Image:
    """Resize to `new` (w, h): LANCZOS when shrinking (no aliasing), BICUBIC when enlarging."""
    if min(new) < 1:
        raise ImageError(
            f"resizing a {img.width}x{img.height} image to {target} would make its short side "
            "less than 1 px; use a larger size"
        )
    if new == img.size:
        return img.copy()
    shrinking = new[0] * new[1] < img.width * img.height
    return img.resize(new, Image.Resampling.LANCZOS if shrinking else Image.Resampling.BICUBIC)


# ---------------------------------------------------------------------------- tensor <-> PIL

def pil_to_tensor(img: Image.Image, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """PIL image (any mode) -> float tensor [1, 3, H, W] in [0, 1], RGB, on `device`."""
    if not dtype.is_floating_point:
        raise ValueError(f"pil_to_tensor needs a floating dtype, got {dtype}")
    arr = np.array(_to_rgb(img), dtype=np.uint8)  # [H, W, 3]; a copy, so torch may own it
    # Move the uint8 data first (4x less to transfer than float32), convert on the device.
    t = torch.from_numpy(arr).to(device=device)
    return t.permute(2, 0, 1).unsqueeze(0).to(dtype).div_(255.0).contiguous()


def tensor_to_pil(t: torch.Tensor) -> Image.Image:
    """Tensor [1, 3, H, W] or [3, H, W] in [0, 1] (any device, grad or not) -> 8-bit RGB image."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"tensor_to_pil expects a torch.Tensor, got {type(t).__name__}")
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3 or t.shape[0] != 3:
        raise ValueError(f"tensor_to_pil expects shape [1, 3, H, W] or [3, H, W], got {list(t.shape)}")
    x = t.detach().to(device="cpu", dtype=torch.float32).nan_to_num(0.0).clamp(0.0, 1.0)
    arr = x.mul(255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(arr)


# ------------------------------------------------------------------------------------ saving

def save_image(image, path, metadata: dict | None = None) -> Path:
    """Atomically write `image` (PIL image or [1, 3, H, W] / [3, H, W] tensor) to `path`.

    PNGs carry json(metadata) in a text chunk keyed "convscope"; with metadata, a JSON sidecar
    (see sidecar_path) is also written atomically. Nothing partial is ever left at `path`.
    Returns the path written.
    """
    p = check_output_path(path, sidecar=metadata is not None)  # both checked before either is written
    fmt = WRITABLE_FORMATS[p.suffix.lower()]
    pil = _savable(image, fmt)
    # Serialize before touching the disk, so bad metadata cannot leave half the outputs behind.
    options = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}.get(fmt, {})
    sidecar_text = None
    if metadata is not None:
        sidecar_text = json.dumps(metadata, indent=2, default=str) + "\n"
        if fmt == "PNG":
            info = PngInfo()
            info.add_text(PNG_METADATA_KEY, json.dumps(metadata, default=str))
            options["pnginfo"] = info
    write_atomic(p, lambda f: pil.save(f, format=fmt, **options))
    if sidecar_text is not None:
        write_atomic(sidecar_path(p), lambda f: f.write(sidecar_text.encode("utf-8")))
    return p


def read_png_metadata(path) -> dict | None:
    """The metadata dict save_image embedded in a PNG, or None if the file carries none."""
    p = readable_file(path)
    with _decoding(p, None) as im:
        text = getattr(im, "text", {}).get(PNG_METADATA_KEY)  # .text also reads chunks after IDAT
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise ImageError(f"the {PNG_METADATA_KEY!r} metadata in {p} is not valid JSON; the file was altered") from None
    return value if isinstance(value, dict) else None


def _savable(image, fmt: str) -> Image.Image:
    """The PIL image to hand to PIL's save for `fmt`: RGB, or RGBA where the format keeps alpha."""
    if isinstance(image, torch.Tensor):
        return tensor_to_pil(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"save_image expects a PIL image or a tensor, got {type(image).__name__}")
    if image.mode == "RGB" or (image.mode == "RGBA" and fmt in ("PNG", "WEBP", "TIFF")):
        return image
    return _to_rgb(image)



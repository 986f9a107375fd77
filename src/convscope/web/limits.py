"""What the web UI accepts from a browser: uploaded image files only, capped in bytes and pixels.

An upload reaches an event handler as Gradio's file record (a dict with the `path` where the server
stored the uploaded bytes, and the client's `orig_name`). A handler never opens a path a client
typed: a bare string, a data URL, or a record whose path lies outside the server's upload folder
is refused. The client's file name is used only to name the image in messages.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..errors import ConfigError, ImageError

DEFAULT_MAX_UPLOAD_MB = 25
# 50 megapixels: a 50 MP phone photo (8160x6120) passes; a decoded RGB image of that size is
# 150 MB, so a few concurrent uploads cannot exhaust a laptop (images.DEFAULT_MAX_PIXELS is 100 Mpx).
DEFAULT_MAX_PIXELS = 50_000_000
# PIL format names accepted (what images.load_image reads as images): no SVG, PDF, EPS or ICO.
IMAGE_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WebP", "BMP": "BMP", "GIF": "GIF",
                 "TIFF": "TIFF", "AVIF": "AVIF"}
MAX_NAME = 80  # characters of a client's file name shown in messages


@dataclass(frozen=True)
class Limits:
    max_bytes: int = DEFAULT_MAX_UPLOAD_MB * 2**20
    max_pixels: int = DEFAULT_MAX_PIXELS
    # Uploads must lie inside this folder (Gradio's upload folder); None skips that check (tests).
    upload_root: Path | None = None

    def __post_init__(self):
        for name in ("max_bytes", "max_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name.replace('_', ' ')} must be a positive whole number, not {value!r}")

    @property
    def max_mb(self) -> float:
        return self.max_bytes / 2**20

    def check_output(self, size: tuple[int, int], long_side: int, what: str = "size") -> None:
        """Refuse work on an image of `size` (w, h) scaled to `long_side` px when that has more
        pixels than the cap: what the server is asked to produce is bounded like what it is sent."""
        w, h = size
        scale = long_side / max(w, h, 1)
        pixels = round(w * scale) * round(h * scale)
        if pixels > self.max_pixels:
            most = math.isqrt(self.max_pixels * max(w, h) // max(min(w, h), 1))
            raise ConfigError(f"{what} {long_side} makes a {round(w * scale)}x{round(h * scale)} image, over this "
                              f"server's limit of {self.max_pixels:,} pixels; use at most {most}")


def display_name(record) -> str:
    """The client's file name for messages: its last part, printable, shortened."""
    name = record.get("orig_name") if isinstance(record, dict) else None
    name = Path(str(name or "upload")).name
    name = "".join(c if c.isprintable() else "?" for c in name)
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 3] + "..."


def upload_path(record, limits: Limits, what: str = "image") -> Path:
    """The server-side path of an uploaded file record, after every check that needs no decoding:
    a record (not a path string), inside the upload folder, a regular file, within the byte cap."""
    if record is None:
        raise ImageError(f"no {what}: upload one first")
    if (not isinstance(record, dict) or not isinstance(record.get("path"), str) or not record["path"]
            or "\0" in record["path"]):  # no file has a NUL in its path (os calls raise ValueError)
        raise ImageError(f"the {what} must be uploaded as a file; paths and URLs are not accepted")
    name = display_name(record)
    path = Path(record["path"])
    if limits.upload_root is not None:
        root = Path(os.path.realpath(limits.upload_root))
        real = Path(os.path.realpath(path))
        if not real.is_relative_to(root):
            raise ImageError(f"the {what} {name} was not uploaded to this server; upload the file")
        path = real
    if not path.is_file():
        raise ImageError(f"the uploaded {what} {name} is gone from the server; upload it again")
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise ImageError(f"{name} is {size / 2**20:.3g} MB, over the upload limit of {limits.max_mb:.3g} MB; "
                         "shrink it first")
    if size == 0:
        raise ImageError(f"{name} is empty (0 bytes); upload an image file")
    return path


def probe_upload(record, limits: Limits, what: str = "image") -> Path:
    """Every check of check_upload short of decoding (the format and the pixel cap from the
    header), with the same ImageErrors; the server-side path."""
    path = upload_path(record, limits, what)
    name = display_name(record)
    from .. import images  # loads torch: not at import, so `serve --help` stays quick

    kinds = ", ".join(dict.fromkeys(IMAGE_FORMATS.values()))
    try:
        with warnings.catch_warnings():  # PIL's size warning: the pixel cap below is the rule
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            images.ignore_damaged_exif()  # the image decodes all the same
            with Image.open(path) as im:  # the header only: nothing decoded yet
                fmt = im.format
    except Image.DecompressionBombError:
        fmt = None  # an image, and far too large: check_image_header says so below, with its size
    except Exception:
        raise ImageError(f"{name} is not an image; upload a {kinds} file") from None
    if fmt is not None and fmt not in IMAGE_FORMATS:
        raise ImageError(f"{name} is in {fmt} format; upload a {kinds} file")  # (it said "a ICO file")
    with _named(path, name):
        images.check_image_header(path, max_pixels=limits.max_pixels)
    return path


def check_upload(record, limits: Limits, what: str = "image") -> Image.Image:
    """The uploaded image as 8-bit RGB (EXIF-upright), or ImageError naming the client's file:
    wrong kind of value, over the byte or pixel cap, not an image, or not an accepted format."""
    from .. import images

    path = probe_upload(record, limits, what)
    with _named(path, display_name(record)):
        return images.load_image(path, max_pixels=limits.max_pixels)


@contextlib.contextmanager
def _named(path: Path, name: str):
    """images' errors name the server's copy; the user knows the file by its own name."""
    try:
        yield
    except ImageError as exc:
        raise ImageError(str(exc).replace(str(path), name).replace(" or raise max_pixels", "")) from None

"""Image files by name and path, without decoding a pixel: which names are images, a folder's image
files, whether an input can be opened, whether an output can be written, and atomic writes.

The standard library only (no torch, numpy or PIL): the command line runs these checks before it
loads PyTorch, so a wrong path is answered at once. `convscope.images` re-exports all of it and
stays the one place the rest of the package imports image operations from.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from .errors import ConfigError, ImageError, OutputError

# Extension -> PIL format name; the only extensions save_image accepts.
WRITABLE_FORMATS = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP",
    ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
}

# Extensions (lower case) of the files a folder scan reads as images: data sets, content folders,
# image folders of the see-inside tools.
# (.avif: phones and the web save it; Pillow reads it from 11.3, an older one skips it as unreadable)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".avif"})


def visible(name: str) -> bool:
    """Not hidden: ".DS_Store", macOS "._x.jpg" resource forks, ".git" and "__MACOSX" (zip
    leftovers) are never images or class folders."""
    return not name.startswith(".") and name != "__MACOSX"


def is_image_name(name: str) -> bool:
    """A visible file name with one of IMAGE_EXTENSIONS (any case)."""
    return visible(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _file_or_broken_link(path: str) -> bool:
    """A file, or a link to a missing one: listed so that its reader reports it unreadable (it was
    left out without a word); not a folder, a pipe or a device named like an image."""
    return os.path.isfile(path) or (os.path.islink(path) and not os.path.exists(path))


def list_image_files(folder, recursive: bool = True, limit: int | None = None) -> list[Path]:
    """The image files in `folder` (and, with `recursive`, its visible sub-folders), sorted by their
    path relative to it, so every run sees the same order; [] when there are none. With `limit`,
    the listing stops at limit + 1 files (the caller says what is too many). Unreadable sub-folders
    are skipped; the caller checks that `folder` itself is a folder."""
    root = Path(folder)
    found: list[tuple[str, Path]] = []
    for parent, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if visible(d)] if recursive else []
        rel = Path(parent).relative_to(root).as_posix()
        found += [(f if rel == "." else f"{rel}/{f}", Path(parent, f)) for f in files
                  if is_image_name(f) and _file_or_broken_link(os.path.join(parent, f))]
        if limit is not None and len(found) > limit:
            break
    return [path for _, path in sorted(found)]


def find_images(folder) -> list[Path]:
    """Image files under `folder` (recursively, by extension), sorted by relative path so every
    run sees the same order. ConfigError for a missing folder, a file, or no images."""
    root = Path(folder).expanduser()
    if not root.exists():
        raise ConfigError(f"folder not found: {root}; check the path")
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder; give a folder of images")
    found = list_image_files(root)
    if not found:
        raise ConfigError(f"no images in {root} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}, "
                          "in subfolders too)")
    return found


def image_paths(inputs: list[str]) -> list[str]:
    """Files as given, and the images inside folders (recursive, sorted); ConfigError when none, or
    for a folder without any (it was skipped without a word when the other inputs had some)."""
    found: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = list_image_files(p)
            if not files and len(inputs) > 1:
                raise ConfigError(f"{item}: no images in this folder (looked for "
                                  f"{', '.join(sorted(IMAGE_EXTENSIONS))}); drop it or add images")
            found += [str(f) for f in files]
        elif p.exists():
            found.append(str(p))
        else:
            raise ConfigError(f"{item}: no such file or folder")
    if not found:
        raise ConfigError(f"no images in {', '.join(inputs)}")
    return found


def as_path(path, error: type = ConfigError, what: str = "path") -> Path:
    """`path` (a str or PathLike) as an expanded Path; anything else, or a name with a NUL byte
    (which no file can have: a raw ValueError from the OS calls), is an `error` naming `what`."""
    if not isinstance(path, (str, os.PathLike)):
        raise error(f"{what} must be a file path (str or pathlib.Path), not {type(path).__name__}")
    p = Path(path).expanduser()
    if "\0" in str(p):
        raise error(f"{what} {str(p)!r} holds a NUL character, which no file name can; check the path")
    return p


def readable_file(path) -> Path:
    """Return `path` as a Path if it is a non-empty regular file, else raise ImageError."""
    p = as_path(path, ImageError, "image path")
    if p.is_dir():
        raise ImageError(f"image not found: {p} is a folder; give the path of an image file")
    try:
        size = p.stat().st_size
    except OSError:
        raise ImageError(f"image not found: {p}; check the path") from None
    if size == 0:
        raise ImageError(f"image file is empty (0 bytes): {p}; re-export or re-download it")
    return p


def check_output_path(path, sidecar: bool = True) -> Path:
    """Check, before any long work, that an image can be written at `path` (and, with `sidecar`,
    its JSON sidecar beside it: see sidecar_path); return it as a Path."""
    p = as_path(path, OutputError, "output path")
    if p.suffix.lower() not in WRITABLE_FORMATS:
        kinds = ", ".join(WRITABLE_FORMATS)
        raise OutputError(f"cannot write {p}: unknown image extension {p.suffix!r}; use one of {kinds}")
    check_output_file(p, "out.png")
    if sidecar and sidecar_path(p).is_dir():
        raise OutputError(f"cannot write {p}: its metadata file {sidecar_path(p)} would replace a folder; "
                          "move that folder or choose another output name")
    return p


def check_output_file(path, example: str) -> Path:
    """Check, before any long work, that a file can be written at `path` (not a folder; its folder
    exists and is writable, tried for real); `example` names a file in messages."""
    p = as_path(path, OutputError, "output path")
    if p.is_dir():
        raise OutputError(f"cannot write {p}: it is a folder; give a file name such as {p / example}")
    folder = p.parent
    if not folder.is_dir():
        raise OutputError(f"output folder does not exist: {folder}; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"output folder is not writable: {folder}; choose another folder")
    # os.access can be wrong (root, ACLs, read-only mounts, network shares): try for real.
    try:
        probe = _create_temp(folder, ".convscope-probe-")
        os.close(probe[0])
        os.unlink(probe[1])
    except OSError as exc:
        raise OutputError(f"output folder is not writable: {folder} ({_reason(exc)}); choose another folder") from None
    return p


def sidecar_path(path) -> Path:
    """Path of the JSON metadata sidecar of an image: same folder and stem, '.json' (out.png -> out.json)."""
    return Path(path).expanduser().with_suffix(".json")


def _create_temp(folder: Path, prefix: str) -> tuple[int, str]:
    """Create a new empty file in `folder`; return (fd, path).

    Not tempfile.mkstemp: that makes files mode 0600, which os.replace would then give to the
    user's output. os.open with 0666 lets the user's umask decide, as for any new file.
    """
    for _ in range(100):
        name = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}.tmp")
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file in {folder}")


def write_atomic(p: Path, write) -> None:
    """Call write(binary file) on a temp file next to `p`, then rename it over `p`.

    The rename is atomic on POSIX and Windows (same folder = same filesystem), so readers see the
    old file or the new one, never a partial one. The temp file is removed on any failure,
    Ctrl-C included.
    """
    tmp = None
    try:
        fd, tmp = _create_temp(p.parent, f".{p.name}.")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points to it
        os.replace(tmp, p)
        tmp = None
    except OSError as exc:
        raise OutputError(f"could not write {p} ({_reason(exc)}); check free space and permissions") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _reason(exc: OSError) -> str:
    """A one-line description of an OSError (strerror if known, else its text)."""
    return exc.strerror or " ".join(str(exc).split()) or type(exc).__name__


class OutputSet:
    """Files a run writes one after another (frames, a figure per layer), undone together if the
    run fails: `claim` each path just before writing it; a file an earlier run left under that name
    (and its .json sidecar, with `sidecar`) waits aside as .NAME.earlier until `keep` drops it, or
    `undo` removes what this run wrote and puts the earlier files back. A failed rerun used to
    delete the earlier run's files it had overwritten. `written`: the paths claimed (sidecars too)."""

    def __init__(self):
        self.written: list[Path] = []
        self._aside: dict[Path, Path] = {}

    def claim(self, path, sidecar: bool = False) -> Path:
        path = Path(path)
        for p in (path, sidecar_path(path)) if sidecar else (path,):
            if p in self.written:
                continue
            if p.is_file():
                aside = p.with_name(f".{p.name}.earlier")
                os.replace(p, aside)
                self._aside[p] = aside
            self.written.append(p)
        return path

    def keep(self) -> None:
        for aside in self._aside.values():
            with contextlib.suppress(OSError):
                aside.unlink()
        self._aside = {}

    def undo(self) -> None:
        for p in self.written:
            with contextlib.suppress(OSError):
                p.unlink()
        for p, aside in self._aside.items():
            with contextlib.suppress(OSError):
                os.replace(aside, p)
        self.written, self._aside = [], {}

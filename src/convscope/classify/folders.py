"""Classification data in folders: where the splits, classes and image files of a data folder are
(the layouts `data.load_data` understands), found from file names alone, before any decoding.
Hidden files and folders and non-image files are ignored; symlinked files are followed, unreadable
sub-folders and dangling links hold nothing."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DataError
from ..images import IMAGE_EXTENSIONS
from ..images import is_image_name as is_image
from ..images import visible


@dataclass
class Listing:
    """The image files of one split, before decoding."""

    folder: Path
    classes: list[str]
    files: list[str]            # relative to `folder`: "<class>/<...>/<name>"
    labels: list[int]
    stats: list[tuple[int, int]]  # (bytes, mtime_ns) per file: the cache key


def layout(root: Path) -> tuple[Path, Path | None, str]:
    """(train folder, val folder or None, val kind) of a data folder."""
    def has_subfolders(p: Path) -> bool:
        return p.is_dir() and any(True for _ in subfolders(p))

    # A class that happens to be called "train" holds images, not folders: only a train/ with
    # sub-folders means the split layout.
    if has_subfolders(root / "train"):
        for kind in ("val", "test"):
            if has_subfolders(root / kind):
                return root / "train", root / kind, kind
        return root / "train", None, ""
    return root, None, ""


def subfolders(folder: Path) -> Iterator[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                if visible(e.name) and e.is_dir():
                    yield e
    except OSError as exc:
        reason = exc.strerror or exc
        raise DataError(f"cannot read the data folder {folder} ({reason}); check its permissions") from None


def list_split(folder: Path, expected: Sequence[str] | None = None, one_class_ok: bool = False) -> Listing:
    """The image files below each class sub-folder of `folder`, sorted; errors for bad layouts.
    `one_class_ok`: a single class is fine (a test folder of one of a run's classes)."""
    classes = sorted(e.name for e in subfolders(folder))
    if not classes:
        with os.scandir(folder) as entries:
            loose = any(is_image(e.name) for e in entries)
        hint = " (the images lie directly in it)" if loose else ""
        raise DataError(f"no class sub-folders in {folder}{hint}: put the images of each class in a folder "
                        f"named after the class, e.g. {folder / 'cat' / '0001.jpg'}")
    if expected is not None and classes != list(expected):
        missing = [c for c in expected if c not in classes]
        extra = [c for c in classes if c not in expected]
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                ([f"not in train: {', '.join(extra)}"] if extra else [])
        raise DataError(f"the classes of {folder} do not match those of the training folder "
                        f"({'; '.join(parts)}); use the same class folders in both")
    if len(classes) == 1 and not one_class_ok:
        raise DataError(f"only one class ({classes[0]!r}) in {folder}: classification needs at least 2 "
                        "class sub-folders")
    files, labels, stats = [], [], []
    empty = []
    for label, name in enumerate(classes):
        found = image_files(folder / name)
        if not found:
            empty.append(name)
        for rel, file_stat in found:
            files.append(os.path.join(name, rel))
            labels.append(label)
            stats.append(file_stat)
    if not files:
        raise DataError(f"no image files in {folder} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))} "
                        "in its class sub-folders)")
    if empty:
        raise DataError(f"class {empty[0]!r} has no image files in {folder / empty[0]}: add images or remove "
                        "the folder")
    return Listing(folder, classes, files, labels, stats)


def image_files(class_dir: Path) -> list[tuple[str, tuple[int, int]]]:
    """(path relative to class_dir, (bytes, mtime_ns)) of every image file below it, sorted by path.
    Plain strings and os.scandir: listing the 60,000 CIFAR files with Path objects took seconds."""
    found = []
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(os.path.join(class_dir, rel)) as it:
                entries = list(it)
        except OSError:
            continue  # an unreadable sub-folder holds nothing we can use
        for e in entries:
            if not visible(e.name):
                continue
            sub = os.path.join(rel, e.name) if rel else e.name
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(sub)
                elif is_image(e.name):
                    try:
                        st = e.stat()  # follows links
                    except FileNotFoundError:  # a dangling link: listed, so decoding counts it unreadable
                        found.append((sub, (-1, 0)))  # (it was left out without a word)
                        continue
                    if stat.S_ISREG(st.st_mode):  # (not a pipe named like an image: reading it would wait)
                        found.append((sub, (st.st_size, st.st_mtime_ns)))
            except OSError:
                continue
    found.sort(key=lambda item: item[0].split(os.sep))
    return found


def decode_size(folder: str, input_size: int, model: str, sample: int = 64) -> int:
    """The side a folder's images are decoded to. Models trained from scratch see exactly their
    input size. Transfer models upsample small images on the device, so small images (CIFAR's 32 px)
    are kept as they are instead of being stored 50x larger: the largest short side among up to
    `sample` images spread over the folder (read from their headers), when it is under the input
    size. (It was the first image's: one thumbnail sorted first shrank every photo to its size.)"""
    if not model.startswith("transfer:"):
        return input_size
    import warnings

    from PIL import Image

    root = Path(folder).expanduser()
    files = [p for p in sorted(root.rglob("*")) if is_image(p.name) and p.is_file()
             and all(visible(part) for part in p.relative_to(root).parts)]  # as list_split sees them
    n = min(sample, len(files))
    largest = 0
    for path in (files[i * len(files) // n] for i in range(n)):  # evenly spaced over the sorted list
        try:
            with warnings.catch_warnings():  # (a huge image's DecompressionBombWarning: load_image says more)
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    largest = max(largest, min(im.size))
        except Exception:  # noqa: BLE001 - unreadable (a decompression bomb is no OSError): the data layer says so
            continue
        if largest >= input_size:
            break
    return min(input_size, largest) if largest else input_size


def folder_classes(spec: str) -> list[str] | None:
    """The class names of a data folder as they are now, from its folder names alone (those
    list_split finds, before any decoding); None for cifar10 or a folder that cannot be listed
    (loading it says why)."""
    root = Path(spec).expanduser()
    if spec == "cifar10" or not root.is_dir():
        return None
    try:
        return sorted(e.name for e in subfolders(layout(root)[0]))
    except (OSError, DataError):
        return None


def plain_class_folder(spec: str) -> bool:
    """A folder of class sub-folders without train/ (val/, test/) inside."""
    root = Path(spec).expanduser()
    return root.is_dir() and layout(root)[0] == root


def same_folder(a: str, b: str) -> bool:
    """Whether two paths name the same folder (relative, ~ and symlinks resolved)."""
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return False


def run_outside_data(out: Path, data: str) -> None:
    """ConfigError when a run folder `out` lies where the data is read from (the data folder, or its
    train/ and val/ or test/ in the split layout; not hidden folders): it would be read as a class
    of images (and refused as an empty one, advice that cannot be followed)."""
    if data == "cifar10":
        return
    try:
        root, target = Path(data).expanduser().resolve(), Path(out).expanduser().resolve()
        if not root.is_dir() or root not in target.parents:
            return
        train, val, _ = layout(root)
    except (OSError, DataError):
        return
    read = [f for f in (train, val) if f is not None]
    if any(f == target or f in target.parents for f in read) and all(
            visible(part) for part in target.relative_to(root).parts):
        raise ConfigError(f"-o {out} is inside --data {data}, where it would be read as a class; "
                          "choose a run folder outside the data")

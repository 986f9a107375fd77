"""Classification data: CIFAR-10 or a folder of images, decoded once to uint8 (`loader.DeviceLoader`
then keeps the pixels on the device and augments them there).

Small data sets (CIFAR-10 is 150 MB as uint8) fit in any GPU's memory, so instead of a DataLoader
with worker processes decoding and augmenting on the CPU every epoch, `load_data` decodes every
image exactly once (optionally caching the decoded tensors on disk) and `DeviceLoader` moves them
to the device once and does the augmentation there, for a whole batch at a time, with tensor ops.

Layouts `load_data` understands (`spec` is "cifar10" or a folder; `folders` finds the files):
- "cifar10": torchvision's CIFAR-10 (downloaded on first use; train = 50,000, val = the 10,000
  test images). A folder that happens to be called cifar10 is given as ./cifar10.
- FOLDER/<class>/...: one folder per class, images anywhere below it; a stratified, seeded
  `val_split` fraction of every class is held out for validation.
- FOLDER/train/<class>/... plus FOLDER/val/<class>/... or FOLDER/test/<class>/... (val wins when
  both exist: test/ is often unlabelled or meant to stay untouched until the end).
Class names are the sorted folder names (for the CIFAR-10 image tree that is the official order).
Hidden files and folders (".DS_Store", ".ipynb_checkpoints", "._x.jpg") and non-image files are
ignored; image files that cannot be decoded are skipped and listed in `ImageData.skipped`.

Engine only: no prints, no output files besides the optional decoded-image cache; progress goes
through a callback.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import secrets
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..argcheck import callback_or_none, path_or_none
from ..errors import ConfigError, DataError, ImageError
from ..images import load_image
from ..options import SEED_MAX
from .folders import Listing, layout, list_split

__all__ = ["CIFAR10", "MAX_DATA_BYTES", "DataError", "DataSplits", "ImageData", "LoadProgress",
           "load_data", "load_images"]

CIFAR10 = "cifar10"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Decoded uint8 pixels of all splits together. 8 GB holds ImageNet-sized sets at 64 px or CIFAR-10
# at 224 px (7.5 GB); above it a laptop would swap, and the GPU copy would not fit most GPUs either.
MAX_DATA_BYTES = 8 * 1000**3
_CACHE_FORMAT = 4  # bump when the cached payload or the decoding (resize rule) changes
_CHUNK = 64        # images per thread-pool task: amortizes task overhead, keeps progress smooth


@dataclass
class ImageData:
    """One split, decoded once and kept as uint8."""

    images: torch.Tensor        # uint8 [N, 3, H, W], all images the same size
    labels: torch.Tensor        # int64 [N], indices into `classes`
    classes: list[str]          # index -> name
    paths: list[str] | None     # source file of each image (None for the CIFAR-10 binaries)
    skipped: list[str]          # files that could not be decoded: "path: reason"

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> ImageData:
        """The images at `index` (int64 positions), in that order; `skipped` is not carried over."""
        paths = None if self.paths is None else [self.paths[i] for i in index.tolist()]
        return ImageData(self.images[index], self.labels[index], list(self.classes), paths, [])


@dataclass
class DataSplits:
    train: ImageData
    val: ImageData              # the test/val folder, or the `val_split` hold-out of the training images
    source: str                 # "cifar10" or the absolute folder path
    val_kind: str               # "test", "val" or "split:0.1"
    val_split: float | None = None  # the hold-out's draw (fraction and seed), when it is one
    seed: int | None = None

    def record(self) -> dict:
        """What a run records of its data: where it came from, the validation split, the counts."""
        return {"data": self.source, "val": self.val_kind, "train_images": len(self.train),
                "val_images": len(self.val)}


@dataclass
class LoadProgress:
    """What `load_data` is doing: `done` of `total` images of `what` ("train", "val", "test",
    "images" for a folder still to be split, "download" while CIFAR-10 downloads)."""

    what: str
    done: int
    total: int
    cached: bool = False        # True when the images came from the decoded-image cache


# ------------------------------------------------------------------------------------ entry point

def load_data(spec: str, *, root: str | None = None, size: int | None = None, val_split: float = 0.1,
              seed: int = 0, cache_dir: str | None = None,
              progress: Callable[[LoadProgress], None] | None = None) -> DataSplits:
    """Load a data set as uint8 tensors: "cifar10" or a folder (see the module docstring for layouts).

    size: every image is resized so its short side is `size`, then centre-cropped to size x size;
    None keeps the images as they are, which needs them all to have one size (CIFAR-10: 32).
    val_split: fraction of each class held out when the folder has no val/ or test/ split, in (0, 0.5].
    seed: the hold-out draw. cache_dir: keep decoded tensors there, keyed by folder, file list (names,
    sizes, mtimes) and size, so the next run skips decoding. root: where CIFAR-10 is (or goes).
    Raises DataError/ConfigError (one line) for every problem a user can cause, before heavy work.
    """
    _check_args(spec, size, val_split, seed)
    path_or_none(root, "root")
    path_or_none(cache_dir, "cache_dir")
    callback_or_none(progress, "LoadProgress", name="progress")
    report = progress or (lambda p: None)
    cache = None if cache_dir is None else Path(cache_dir).expanduser()
    if spec == CIFAR10:
        from .cifar10 import load_cifar10  # torchvision's dataset: imported only when needed

        return load_cifar10(root, size, cache, report)
    return _load_folder(Path(spec).expanduser(), size, val_split, seed, cache, report)


def load_images(folder: str, *, classes: list[str], size: int | None = None, cache_dir: str | None = None,
                progress: Callable[[LoadProgress], None] | None = None) -> ImageData:
    """Every image of `folder` (class sub-folders, no split: a test set to evaluate a run on), its
    labels as indices into `classes`, the run's class names: the folder may hold fewer of them,
    never others. `size` as in `load_data`."""
    path_or_none(cache_dir, "cache_dir")
    callback_or_none(progress, "LoadProgress", name="progress")
    _check_args(folder, size, 0.1, 0)
    if not isinstance(classes, (list, tuple)) or not classes or not all(isinstance(c, str) for c in classes):
        # (None was a TypeError; "cat" was taken as the classes c, a, t)
        raise ConfigError(f"classes must be the run's list of class names (LoadedRun.classes), not {classes!r:.80}")
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}; give a folder of class sub-folders"
                        if not root.exists() else f"--data must be a folder of class sub-folders, but {root} is a file")
    root = root.resolve()
    listing = list_split(root, one_class_ok=True)
    unknown = [c for c in listing.classes if c not in classes]
    if unknown:
        raise DataError(f"{root} has class folders the run does not know ({', '.join(unknown[:5])}); its classes "
                        f"are {', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''}")
    shape = (size, size) if size else _first_shape(listing)
    _check_memory(len(listing.files), *shape)
    cache = None if cache_dir is None else Path(cache_dir).expanduser()
    data = _decoded(listing, size, shape, "images", cache, progress or (lambda p: None))
    index = torch.tensor([classes.index(c) for c in listing.classes], dtype=torch.int64)
    return ImageData(data.images, index[data.labels], list(classes), data.paths, data.skipped)


def _check_args(spec, size, val_split, seed) -> None:
    if not isinstance(spec, (str, os.PathLike)) or not str(spec).strip():
        raise ConfigError(f"--data must be 'cifar10' or a folder of images, not {spec!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1):
        raise ConfigError(f"--input-size must be a whole number of pixels (1 or more), not {size!r}")
    if (isinstance(val_split, bool) or not isinstance(val_split, numbers.Real) or not math.isfinite(val_split)
            or not 0 < val_split <= 0.5):
        raise ConfigError(f"--val-split must be a fraction in (0, 0.5], such as 0.1, not {val_split!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"--seed must be a whole number from 0 to {SEED_MAX}, not {seed!r}")  # (as TrainConfig's)


def _check_memory(count: int, height: int, width: int) -> None:
    need = count * 3 * height * width
    if need > MAX_DATA_BYTES:
        raise DataError(
            f"the decoded images would take {need / 1e9:.1f} GB ({count:,} images of 3x{height}x{width} "
            f"bytes), over the limit of {MAX_DATA_BYTES / 1e9:.1f} GB; use a smaller --input-size")


# ------------------------------------------------------------------------------------- folders

def _listings(root: Path) -> tuple[Listing, Listing | None, str]:
    """(training listing, validation listing or None, its kind) of a data folder: file lists only."""
    train_dir, val_dir, val_kind = layout(root)
    train = list_split(train_dir)
    return train, (list_split(val_dir, train.classes) if val_dir is not None else None), val_kind


def _load_folder(root: Path, size, val_split, seed, cache, report) -> DataSplits:
    if not root.exists():
        raise DataError(f"data folder not found: {root}; give a folder of class sub-folders or 'cifar10'")
    if not root.is_dir():
        raise DataError(f"--data must be a folder of class sub-folders or 'cifar10', but {root} is a file")
    root = root.resolve()
    train, val, val_kind = _listings(root)
    if val is None:
        _check_splittable(train.labels, train.classes, root)  # cheap, from the file list; again after decoding

    shape = (size, size) if size else _first_shape(train)
    _check_memory(len(train.files) + (len(val.files) if val is not None else 0), *shape)
    pool = _decoded(train, size, shape, "train" if val is not None else "images", cache, report)
    if val is not None:
        # With size=None the first training image fixed the shape: the val images must share it.
        val_data = _decoded(val, size, shape, val_kind, cache, report)
        return DataSplits(pool, val_data, str(root), val_kind)
    _check_splittable(pool.labels.tolist(), pool.classes, root)
    train_idx, val_idx = _stratified_split(pool.labels, len(pool.classes), val_split, seed)
    train_data, val_data = pool.subset(train_idx), pool.subset(val_idx)
    train_data.skipped = pool.skipped  # the hold-out has its own list empty: count them once
    return DataSplits(train_data, val_data, str(root), f"split:{val_split:g}", val_split, seed)


def load_validation(spec: str, *, root: str | None = None, size: int | None = None, val_split: float = 0.1,
                    seed: int = 0) -> tuple[ImageData, str, DataSplits | None]:
    """The validation images of `load_data(spec, ...)` and their kind, for an evaluation: from a
    folder with train/ and val/ (or test/) only those are decoded (evaluating a run used to decode
    its whole training set first); a hold-out needs every image decoded to be drawn again, and
    CIFAR-10 comes whole: then the DataSplits too, else None."""
    _check_args(spec, size, val_split, seed)
    path = Path(spec).expanduser()
    if spec != CIFAR10 and path.is_dir():
        train, val, val_kind = _listings(path.resolve())  # (listings alone: the class names, the shape)
        if val is not None:
            shape = (size, size) if size else _first_shape(train)
            _check_memory(len(val.files), *shape)
            return _decoded(val, size, shape, val_kind, None, lambda p: None), val_kind, None
    splits = load_data(spec, root=root, size=size, val_split=val_split, seed=seed)
    return splits.val, splits.val_kind, splits


def _check_splittable(labels: list[int], classes: list[str], root: Path) -> None:
    """Every class needs 2 images or more, so that one can be held out and one trained on."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    for name, count in zip(classes, counts.tolist()):
        if count < 2:
            raise DataError(f"class {name!r} has only one readable image in {root}: at least 2 are needed to "
                            "hold some out for validation; add images or give train/ and val/ folders")


def _stratified_split(labels: torch.Tensor, num_classes: int, fraction: float,
                      seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) int64 positions: round(fraction * n) of each class's n images go to val (at least 1,
    at most n - 1), drawn with `seed`; both sorted, so they keep the class-then-file order."""
    g = torch.Generator().manual_seed(int(seed))
    train, val = [], []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()
        n = len(idx)
        k = min(n - 1, max(1, math.floor(n * fraction + 0.5)))
        idx = idx[torch.randperm(n, generator=g)]
        val.append(idx[:k])
        train.append(idx[k:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def _check_every_class(data: ImageData, folder: Path) -> None:
    counts = torch.bincount(data.labels, minlength=len(data.classes))
    for name, n in zip(data.classes, counts.tolist()):
        if n == 0:
            bad = sum(1 for s in data.skipped if f"{os.sep}{name}{os.sep}" in s)
            raise DataError(f"class {name!r} has no readable image in {folder / name} ({bad} unreadable "
                            "files skipped); fix or add images, or remove the folder")


# ------------------------------------------------------------------------------------- decoding

def _decoded(listing: Listing, size: int | None, shape: tuple[int, int], what: str, cache,
             report) -> ImageData:
    """Decode a listing, or load it from the cache. With `size`, images are resized to size x size;
    without, every image must already have `shape` (h, w)."""
    key = _cache_key(listing, size, shape)
    path = None if cache is None else _cache_path(cache, listing.folder, size, key)
    if path is not None:
        hit = _cache_load(path, key)
        if hit is not None:
            report(LoadProgress(what, len(hit), len(hit), cached=True))
            return hit
    data = _decode_listing(listing, size, shape, what, report)
    _check_every_class(data, listing.folder)
    if path is not None:
        _cache_save(path, key, data)
    return data


def _decode_listing(listing: Listing, size: int | None, shape: tuple[int, int], what: str,
                    report) -> ImageData:
    n = len(listing.files)
    out = torch.empty((n, 3, *shape), dtype=torch.uint8)
    ok = np.zeros(n, dtype=bool)
    reasons: dict[int, str] = {}

    def decode(start: int) -> int:
        stop = min(start + _CHUNK, n)
        for i in range(start, stop):
            try:
                img = load_image(os.path.join(listing.folder, listing.files[i]))
            except ImageError as exc:
                reasons[i] = str(exc)
                continue
            if size:
                img = square_crop(img, size)
            elif (img.height, img.width) != shape:
                raise DataError(
                    f"images differ in size ({listing.folder / listing.files[i]} is {img.width}x{img.height}, "
                    f"others are {shape[1]}x{shape[0]}); give --input-size to resize them all")
            out[i].copy_(_chw(img))
            ok[i] = True
        return stop - start

    report(LoadProgress(what, 0, n))
    _run_chunks(decode, range(0, n, _CHUNK), lambda done: report(LoadProgress(what, done, n)))
    keep = torch.from_numpy(np.flatnonzero(ok))
    images = out if len(keep) == n else out[keep]
    labels = torch.tensor(listing.labels, dtype=torch.int64)[keep]
    paths = [os.path.join(listing.folder, listing.files[i]) for i in keep.tolist()]
    skipped = [reasons[i] for i in sorted(reasons)]
    return ImageData(images, labels, list(listing.classes), paths, skipped)


def _first_shape(listing: Listing) -> tuple[int, int]:
    """(h, w) of the first readable image (from its header), which every image must then have."""
    for rel in listing.files:
        try:
            with Image.open(listing.folder / rel) as im:  # the header only; load_image decides about the pixels later
                w, h = im.size
                orientation = im.getexif().get(0x0112, 1)
        except Exception:  # noqa: BLE001 - any failure here means "unreadable": decided when decoding
            continue
        # EXIF orientations 5-8 swap the sides, and load_image applies them.
        return (w, h) if orientation in (5, 6, 7, 8) else (h, w)
    raise DataError(f"no readable image in {listing.folder}; check the files")


def _chw(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 [3, H, W] (a view of a writable copy: torch warns on read-only arrays)."""
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


def square_crop(img: Image.Image, size: int) -> Image.Image:
    """Short side to `size`, centre crop to size x size: one resampling of just the crop's box (so a
    20000x1 image never becomes a 4480000x224 intermediate). Training, evaluation and prediction all
    use it, so a photo reaches the net the same way in each."""
    w, h = img.size
    if (w, h) == (size, size):
        return img
    s = min(w, h)
    left, top = (w - s) / 2, (h - s) / 2
    resample = Image.Resampling.LANCZOS if s > size else Image.Resampling.BICUBIC
    return img.resize((size, size), resample, box=(left, top, left + s, top + s))


def _run_chunks(work: Callable[[int], int], starts: range, done_callback) -> None:
    """Run work(start) for every start on a thread pool (PIL decodes outside the GIL); the first
    exception cancels what has not started and is raised here, in the caller's thread."""
    workers = max(1, min(8, (os.cpu_count() or 1)))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convscope-decode")
    try:
        futures = [pool.submit(work, s) for s in starts]
        done = 0
        for f in futures:
            done += f.result()
            done_callback(done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------- cache

def _cache_key(listing: Listing, size, shape) -> str:
    """Hash of everything the decoded tensors depend on: the folder, every file's relative path,
    size and mtime, the class names and the target size (and the cache format)."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": _CACHE_FORMAT, "folder": str(listing.folder), "size": size,
                         "shape": list(shape), "classes": listing.classes}).encode())
    for p, label, (nbytes, mtime) in zip(listing.files, listing.labels, listing.stats):
        h.update(f"\n{p}\t{label}\t{nbytes}\t{mtime}".encode())
    return h.hexdigest()


def _cache_path(cache: Path, folder: Path, size, key: str) -> Path:
    # The stem names (folder, size): a new version of the same folder replaces the old file.
    stem = hashlib.sha256(json.dumps([str(folder), size]).encode()).hexdigest()[:12]
    return cache / f"images-{folder.name}-{stem}-{key[:16]}.pt"


def _cache_load(path: Path, key: str) -> ImageData | None:
    """The cached ImageData, or None when absent, stale or damaged (then it is simply rebuilt)."""
    if not path.is_file():
        return None
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
        data = ImageData(d["images"], d["labels"], list(d["classes"]), d["paths"], list(d["skipped"]))
        n = len(data.labels)
        valid = (d["key"] == key and d["format"] == _CACHE_FORMAT and data.images.dtype == torch.uint8
                 and data.images.dim() == 4 and data.images.shape[:2] == (n, 3)
                 and data.labels.dtype == torch.int64 and (data.paths is None or len(data.paths) == n))
    except Exception:  # noqa: BLE001 - a truncated or foreign file is a cache miss, never an error
        return None
    return data if valid else None


def _cache_save(path: Path, key: str, data: ImageData) -> None:
    """Write atomically (temp file + rename); stale versions of the same folder are removed. A cache
    that cannot be written only costs time, so failures warn instead of stopping the run."""
    payload = {"format": _CACHE_FORMAT, "key": key, "images": data.images, "labels": data.labels,
               "classes": list(data.classes), "paths": data.paths, "skipped": list(data.skipped)}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        prefix = path.name[: -len(key[:16]) - len(".pt")]
        for old in path.parent.glob(prefix + "*.pt"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError as exc:
        warnings.warn(f"could not write the decoded-image cache in {path.parent} "
                      f"({exc.strerror or exc}); continuing without it", stacklevel=4)
    finally:
        if tmp is not None:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass

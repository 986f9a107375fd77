"""CIFAR-10 for `data.load_data("cifar10")`: torchvision's copy (downloaded on first use, into
--data-root or cifar10 in config.default_cache_dir()), as uint8 tensors; resized copies cached like folders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .config import default_cache_dir
from .data import (_CACHE_FORMAT, _CHUNK, CIFAR10, CIFAR10_CLASSES, DataError, DataSplits, ImageData,
                   LoadProgress, _cache_load, _cache_path, _cache_save, _check_memory, _chw, _run_chunks,
                   square_crop)


def default_cifar10_root() -> Path:
    return default_cache_dir() / "cifar10"


def _cifar10_dataset(root: Path, train: bool, report):
    """torchvision's CIFAR10 split, downloading it the first time. Separate so tests can replace it."""
    from torchvision.datasets import CIFAR10 as TorchCIFAR10  # heavy: imported only when needed

    try:
        return TorchCIFAR10(str(root), train=train, download=False)
    except RuntimeError:  # not there yet (or damaged): download
        pass
    report(LoadProgress("download", 0, 0))
    existed = root.is_dir()
    before = set(root.iterdir()) if existed else set()
    try:
        return TorchCIFAR10(str(root), train=train, download=True)
    except Exception as exc:  # noqa: BLE001 - network, disk and archive errors all mean the same to a user
        _remove_new(root, existed, before)  # a part of the archive, or the folder the attempt made
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise DataError(f"could not download CIFAR-10 into {root} ({reason}); check the internet connection "
                        "(or --data-root), or give --data a folder of images with class sub-folders") from None


def _remove_new(root: Path, existed: bool, before: set[Path]) -> None:
    """What a failed download left: the whole folder if it made it, else the entries it added."""
    import shutil

    if not existed:
        shutil.rmtree(root, ignore_errors=True)
        return
    for entry in set(root.iterdir()) - before if root.is_dir() else ():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def load_cifar10(root, size, cache, report) -> DataSplits:
    root = Path(root).expanduser() if root else default_cifar10_root()
    if root.exists() and not root.is_dir():
        raise DataError(f"--data-root must be a folder, but {root} is a file")
    side = size or 32
    _check_memory(60_000, side, side)
    splits = []
    for train, what in ((True, "train"), (False, "test")):
        ds = _cifar10_dataset(root, train, report)
        pixels = torch.from_numpy(np.ascontiguousarray(ds.data))  # [N, 32, 32, 3] uint8
        labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
        classes = list(getattr(ds, "classes", CIFAR10_CLASSES))
        if side == pixels.shape[1] == pixels.shape[2]:
            report(LoadProgress(what, len(labels), len(labels)))
            data = ImageData(pixels.permute(0, 3, 1, 2).contiguous(), labels, classes, None, [])
        else:
            data = _resized_cifar(root, pixels, labels, classes, side, what, cache, report)
        splits.append(data)
    return DataSplits(splits[0], splits[1], CIFAR10, "test")


def _resized_cifar(root, pixels, labels, classes, side, what, cache, report) -> ImageData:
    """CIFAR-10 resized to side x side (slow: cached like a folder when cache_dir is given)."""
    h = hashlib.sha256(json.dumps({"format": _CACHE_FORMAT, "cifar10": what, "size": side}).encode())
    h.update(pixels.numpy().tobytes()[:: 997])  # a cheap fingerprint of the pixels
    key = h.hexdigest()
    path = None if cache is None else _cache_path(cache, root / what, side, key)
    if path is not None:
        hit = _cache_load(path, key)
        if hit is not None:
            report(LoadProgress(what, len(hit), len(hit), cached=True))
            return hit
    n = len(labels)
    out = torch.empty((n, 3, side, side), dtype=torch.uint8)
    arrays = pixels.numpy()

    def resize(start: int) -> int:
        for i in range(start, min(start + _CHUNK, n)):
            img = square_crop(Image.fromarray(arrays[i]), side)
            out[i].copy_(_chw(img))
        return min(start + _CHUNK, n) - start

    report(LoadProgress(what, 0, n))
    _run_chunks(resize, range(0, n, _CHUNK), lambda done: report(LoadProgress(what, done, n)))
    data = ImageData(out, labels, classes, None, [])
    if path is not None:
        _cache_save(path, key, data)
    return data

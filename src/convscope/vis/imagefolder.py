"""A folder of images for a scan (top-activations): the image files under it, each loaded as a
square, and a stream of batches decoded by background threads while the previous batch runs; file
names relative to the folder for messages and records."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import images
from ..errors import ImageError
from ..imagefiles import find_images  # noqa: F401 (its home is imagefiles; the scan's callers import it here)

# Files the scan reads: images.IMAGE_EXTENSIONS (case-insensitive). Hidden files and folders
# (".DS_Store", macOS "._x.jpg" resource forks, ".git") are not images and are skipped without
# counting as unreadable.


def load_square(path, size: int, fit: str = "crop") -> Image.Image:
    """An image file as a `size` x `size` RGB image (ImageError when unreadable)."""
    img = images.load_image(path)
    # reducing_gap: a box reduction first, then the filter; ~5x faster on camera-size photos and
    # indistinguishable at these sizes.
    w, h = img.size
    box = (0, 0, w, h)
    if fit == "crop":  # the centred square of side min(w, h)
        s = min(w, h)
        box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return img.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=2.0)


@dataclass
class Batch:
    indices: list[int]          # positions in the file list of the images in `pixels`
    pixels: torch.Tensor        # [n, 3, size, size] uint8 on the CPU (4x smaller than float)
    skipped: list[int]          # positions of the files in this chunk that could not be read


def _load_batch(paths: Sequence[Path], start: int, size: int, fit: str, pool: ThreadPoolExecutor) -> Batch:
    def one(path):
        try:
            return np.asarray(load_square(path, size, fit))
        except ImageError:
            return None

    arrays = list(pool.map(one, paths))
    ok = [i for i, a in enumerate(arrays) if a is not None]
    pixels = (torch.from_numpy(np.stack([arrays[i] for i in ok])).permute(0, 3, 1, 2).contiguous()
              if ok else torch.zeros(0, 3, size, size, dtype=torch.uint8))
    return Batch([start + i for i in ok], pixels,
                 [start + i for i, a in enumerate(arrays) if a is None])


def stream_batches(paths: Sequence[Path], size: int, fit: str, batch_size: int,
                   workers: int = 2) -> Iterator[Batch]:
    """Batches of the images in `paths`, in order; while the caller works on one batch the next one
    is being decoded, so at most two batches of pixels are alive at any time."""
    chunks = [(i, paths[i:i + batch_size]) for i in range(0, len(paths), batch_size)]
    if not chunks:
        return
    pool = ThreadPoolExecutor(max_workers=workers)
    loader = ThreadPoolExecutor(max_workers=1)  # runs _load_batch, which fans out over `pool`
    try:
        pending = loader.submit(_load_batch, chunks[0][1], chunks[0][0], size, fit, pool)
        for k in range(len(chunks)):
            batch = pending.result()
            pending = None
            if k + 1 < len(chunks):
                start, part = chunks[k + 1]
                pending = loader.submit(_load_batch, part, start, size, fit, pool)
            yield batch
            del batch
    finally:
        loader.shutdown(wait=True, cancel_futures=True)
        pool.shutdown(wait=True, cancel_futures=True)



def relative_name(path: Path, folder: Path) -> str:
    try:
        return Path(path).relative_to(folder).as_posix()
    except ValueError:
        return str(path)

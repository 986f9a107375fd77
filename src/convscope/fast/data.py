"""Training data for the feed-forward networks: a folder's images as random square crops."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from .. import images
from ..errors import ConfigError, UserError

MAX_IMAGES = 2_000_000


class TrainingError(UserError):
    """A training run cannot start or go on: its image folders, its files."""


def image_files(folder: str | Path, what: str) -> list[Path]:
    if not isinstance(folder, (str, os.PathLike)):
        raise ConfigError(f"the {what} images must be given as a folder path, not {type(folder).__name__}")
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise TrainingError(f"{what} folder not found: {root}" if not root.exists() else f"{root} is not a folder")
    found = images.list_image_files(root, limit=MAX_IMAGES)
    if len(found) > MAX_IMAGES:
        raise TrainingError(f"{root} holds more than {MAX_IMAGES:,} images; use a smaller folder")
    if not found:
        raise TrainingError(f"no images in {root} (looked for {', '.join(sorted(images.IMAGE_EXTENSIONS))}, "
                            "in subfolders too)")
    return found


class CropSampler:
    """Random square crops from a folder of images: each image is scaled so its short side is a
    random 1-1.5x the crop size (images smaller than that are upsampled), cropped, and flipped half
    of the time. Decoded images are kept (as uint8, downscaled to at most 1.5x crop) so each file
    is read once; unreadable files are skipped and counted (all unreadable is an error)."""

    def __init__(self, files: list[Path], size: int, what: str, cache_bytes: int = 2 * 2 ** 30):
        self.files, self.size, self.what = files, size, what
        self.cache: dict[int, torch.Tensor | None] = {}
        self.cache_bytes, self.used = cache_bytes, 0
        self.skipped: list[Path] = []

    def _decode(self, i: int) -> torch.Tensor | None:
        if i in self.cache:
            return self.cache[i]
        try:
            img = images.load_image(self.files[i])
        except UserError:
            self.skipped.append(self.files[i])
            self.cache[i] = None
            if len(self.skipped) == len(self.files):
                raise TrainingError(f"none of the {len(self.files)} images in the {self.what} folder could be "
                                    f"read (first: {self.files[0]})") from None
            return None
        short = min(img.size)
        limit = math.ceil(self.size * 1.5)
        if short > limit:  # keep memory bounded: no need for more pixels than the largest scale
            img = img.resize((max(1, round(img.width * limit / short)), max(1, round(img.height * limit / short))),
                             Image.Resampling.LANCZOS)
        t = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()
        if self.used + t.numel() <= self.cache_bytes:
            self.cache[i] = t
            self.used += t.numel()
        return t

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """[n, 3, size, size] float in [0, 1]."""
        out = []
        attempts = 0
        while len(out) < n:
            attempts += 1
            if attempts > 100 * n + len(self.files):
                raise TrainingError(f"too few readable images in the {self.what} folder")
            t = self._decode(int(torch.randint(len(self.files), (1,), generator=gen)))
            if t is None:
                continue
            h, w = t.shape[1:]
            scale = self.size * (1.0 + 0.5 * float(torch.rand((), generator=gen))) / min(h, w)
            nh, nw = max(self.size, round(h * scale)), max(self.size, round(w * scale))
            x = F.interpolate(t[None].float() / 255.0, size=(nh, nw), mode="bilinear", antialias=scale < 1,
                              align_corners=False)[0]
            top = int(torch.randint(nh - self.size + 1, (1,), generator=gen))
            left = int(torch.randint(nw - self.size + 1, (1,), generator=gen))
            x = x[:, top:top + self.size, left:left + self.size]
            if bool(torch.rand((), generator=gen) < 0.5):
                x = x.flip(-1)
            out.append(x.clamp(0, 1))
        return torch.stack(out)

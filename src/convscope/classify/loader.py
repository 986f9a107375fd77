"""`DeviceLoader`: batches of an `ImageData` whose uint8 pixels live on the device, augmented there
(flips, shifts with reflect or zero padding, cutout) for a whole batch at a time with tensor ops.
Every random draw of an epoch is made up front from (seed, epoch), so an epoch resumed at batch b
gives the same batches as one run from the start."""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .data import DataError, ImageData

__all__ = ["PAD_MODES", "DeviceLoader"]

PAD_MODES = ("reflect", "zeros")


@dataclass
class _EpochPlan:
    """Every random draw of one epoch, made up front: batch b is then the same whether the epoch
    runs from the start or resumes at b (start_batch)."""

    order: torch.Tensor         # int64 [N]: image index at each position of the epoch
    flip: torch.Tensor | None   # bool [N]
    shift: torch.Tensor | None  # int64 [2, N]: (dy, dx) in [-translate, translate]
    corner: torch.Tensor | None  # int64 [2, N]: top-left (y, x) of the cutout square


class DeviceLoader:
    """Batches (x, y) of an ImageData whose uint8 pixels live on `device` (moved there once).

    Augmentation runs on the device for a whole batch with tensor ops (no per-image Python):
    random horizontal flip (or, with `alternate_flip`, each image mirrored in every other epoch:
    Jordan 2024's alternating flip); random translation by up to `translate` px in each axis (the
    same as padding by `translate` px, reflect or zeros, and cropping back at a random place);
    cutout (a `cutout` x `cutout` square, inside the image, set to the training images' mean
    colour: DeVries & Taylor's zero after normalization; black squares destabilized vgg19-bn
    fine-tuning on CIFAR-10). x: `dtype` in [0, 1], [B, 3, H, W] (channels_last memory when asked);
    y: int64 [B].

    Deterministic: epoch e draws from a generator seeded with seed + e, all draws of the epoch at
    once. Each iteration runs the next epoch (0, 1, ...); `set_epoch(e)` picks it, and
    `start_batch` skips the first batches of that epoch, so a resumed run sees exactly the
    batches an uninterrupted one would. len() is the number of batches of a full epoch.
    """

    def __init__(self, data: ImageData, batch_size: int, *, shuffle: bool = True, drop_last: bool = False,
                 flip: bool = False, translate: int = 0, cutout: int = 0, pad_mode: str = "reflect",
                 alternate_flip: bool = False,
                 device="cpu", dtype: torch.dtype = torch.float32, channels_last: bool = False,
                 seed: int = 0, start_batch: int = 0):
        n, _, h, w = data.images.shape
        self._n = int(n)
        _whole("batch size", batch_size, 1)
        _whole("translate", translate, 0, min(h, w) - 1)
        _whole("cutout", cutout, 0, min(h, w))
        _whole("seed", seed, None)
        if pad_mode not in PAD_MODES:
            raise ConfigError(f"pad mode must be one of {', '.join(PAD_MODES)}, not {pad_mode!r}")
        if not dtype.is_floating_point:
            raise ConfigError(f"the loader's dtype must be a floating type, not {dtype}")
        if n == 0:
            raise DataError("no images to load: the split is empty")
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), bool(shuffle), bool(drop_last)
        self.flip, self.translate, self.cutout, self.pad_mode = bool(flip), int(translate), int(cutout), pad_mode
        self.alternate_flip = bool(alternate_flip)
        self.dtype, self.channels_last, self.seed = dtype, bool(channels_last), int(seed)
        if len(self) == 0:
            raise ConfigError(f"batch size {batch_size} is larger than the {n} images and the last partial "
                              "batch is dropped, so an epoch would be empty; lower the batch size")
        self.device = torch.device(device)
        self.images = data.images.to(self.device).contiguous()  # uint8, moved once (4x less than float)
        self.labels = data.labels.to(self.device)
        self._rows = _wide_rows(self.images)
        self._fill = _mean_colour(self.images[:1024]) if self.cutout else None  # cutout's fill
        self.generator = torch.Generator(device=self.device)
        self.epoch = 0
        self.start_batch = 0
        self.set_epoch(0, start_batch)

    def __len__(self) -> int:
        n = self._n
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """The next iteration runs epoch `epoch` (seed + epoch), from batch `start_batch` on."""
        _whole("epoch", epoch, 0)
        _whole("start batch", start_batch, 0)
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        plan = self._plan(self.epoch)
        start = self.start_batch
        self.epoch, self.start_batch = self.epoch + 1, 0
        return self._batches(plan, start)

    def _batches(self, plan: _EpochPlan, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, bs = len(self.labels), self.batch_size
        for b in range(start, len(self)):
            pos = slice(b * bs, min((b + 1) * bs, n))
            idx = plan.order[pos]
            x = self._rows.index_select(0, idx).view(torch.uint8).view(-1, *self.images.shape[1:])
            x = self._augment(x, plan, pos)
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            # One copy converts dtype and layout; dividing (not multiplying by 1/255) keeps 255 -> 1.0 exact.
            yield x.to(dtype=self.dtype, memory_format=fmt).div_(255.0), self.labels.index_select(0, idx)

    def _plan(self, epoch: int) -> _EpochPlan:
        g = self.generator
        g.manual_seed(self.seed + epoch)
        n, (h, w), dev = len(self.labels), self.images.shape[2:], self.device
        order = (torch.randperm(n, generator=g, device=dev) if self.shuffle
                 else torch.arange(n, device=dev))
        # Drawn in both flip modes, so the shifts and cutouts after it are the same draws either way.
        flip = torch.randint(0, 2, (n,), generator=g, device=dev).bool() if self.flip else None
        if flip is not None and self.alternate_flip:
            # Each image mirrored in every other epoch: a random half in even epochs, the other half in
            # odd ones (per image, not per position), so consecutive epochs never repeat a view.
            first = torch.Generator(device=dev).manual_seed(self.seed + 0x5EED)
            per_image = torch.randint(0, 2, (n,), generator=first, device=dev).bool() ^ bool(epoch % 2)
            flip = per_image[order]
        t = self.translate
        shift = torch.randint(-t, t + 1, (2, n), generator=g, device=dev) if t else None
        corner = None
        if self.cutout:
            c = self.cutout
            corner = torch.stack([torch.randint(0, h - c + 1, (n,), generator=g, device=dev),
                                  torch.randint(0, w - c + 1, (n,), generator=g, device=dev)])
        return _EpochPlan(order, flip, shift, corner)

    def _augment(self, x: torch.Tensor, plan: _EpochPlan, pos: slice) -> torch.Tensor:
        """Flip + translate as one gather (source pixel per output pixel), then cutout; on uint8."""
        b, c, h, w = x.shape
        dev = x.device
        if plan.flip is not None or plan.shift is not None:
            rows = torch.arange(h, device=dev).expand(b, h)
            cols = torch.arange(w, device=dev).expand(b, w)
            valid = None
            if plan.shift is not None:
                dy, dx = plan.shift[:, pos]
                rows, cols = rows + dy[:, None], cols + dx[:, None]  # output (i, j) <- padded (i + dy, j + dx)
                if self.pad_mode == "reflect":  # mirror without repeating the edge, as F.pad's "reflect"
                    rows, cols = _reflect(rows, h), _reflect(cols, w)
                else:
                    valid = (((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :])
                    rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
            if plan.flip is not None:  # flip first, then shift: a flipped image's column j is w-1-j
                cols = torch.where(plan.flip[pos][:, None], w - 1 - cols, cols)
            src = (rows[:, :, None] * w + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
            x = x.reshape(b, c, h * w).gather(2, src).view(b, c, h, w)
            if valid is not None:
                x = x * valid[:, None]  # zero padding: pixels shifted in from outside are 0
        if plan.corner is not None:
            k = self.cutout
            y0, x0 = plan.corner[:, pos]
            ys, xs = torch.arange(h, device=dev), torch.arange(w, device=dev)
            in_y = (ys >= y0[:, None]) & (ys < y0[:, None] + k)  # [B, H]
            in_x = (xs >= x0[:, None]) & (xs < x0[:, None] + k)  # [B, W]
            cut = (in_y[:, :, None] & in_x[:, None, :])[:, None]
            # uint8 * bool stays uint8 (one term is 0 at each pixel); measured ~10x faster than masked_fill on a CPU
            x = x * ~cut + self._fill * cut
        return x


def _mean_colour(images: torch.Tensor) -> torch.Tensor:
    """The mean colour of uint8 images [N, C, H, W], rounded, as uint8 [1, C, 1, 1]."""
    total = images.sum((0, 2, 3), dtype=torch.int64)
    return total.div(images[:, 0].numel()).round().to(torch.uint8).view(1, -1, 1, 1)


def _wide_rows(images: torch.Tensor) -> torch.Tensor:
    """`images` [N, 3, H, W] uint8 as [N, row] of the widest integer type the row length allows: the
    same bytes, but index_select then copies whole rows 8 bytes at a time (measured ~50x faster on
    a CPU than selecting uint8 elements)."""
    rows = images.view(len(images), -1)
    for dtype in (torch.int64, torch.int32, torch.int16):
        if rows.shape[1] % dtype.itemsize == 0:
            return rows.view(dtype)
    return rows


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Indices reflected into [0, n) about the edges (valid for offsets up to n - 1 outside)."""
    i = i.abs()
    return torch.where(i >= n, 2 * (n - 1) - i, i)


def _whole(name: str, value, lo: int, hi: int | None = None) -> None:
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or (lo is not None and value < lo) or (hi is not None and value > hi)):
        span = f" from {lo} to {hi}" if hi is not None else (f" of {lo} or more" if lo is not None else "")
        raise ConfigError(f"{name} must be a whole number{span}, not {value!r}")

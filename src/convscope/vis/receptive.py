"""The receptive field of a layer's units, measured rather than derived: the gradient of one unit
near the grid centre with respect to the input (on random images) is non-zero exactly on the pixels
it sees. Two neighbouring units give the stride and the offset, so any position maps to its input
box. Works on any net, whatever its padding, pooling or branches (used by top-activations)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError

# Random images per probe position when measuring the receptive field: 8 at up to 64 px (a net
# with few channels needs several images before every max-pooling switch has opened once), down
# to 2 from 128 px on (cost grows with the pixels; wide layers fill the field from one image).
RF_PROBE_PIXELS = 8 * 64 * 64


@dataclass(frozen=True)
class ReceptiveField:
    """Where a unit of the layer looks, in input pixels: position (row, col) of the layer's grid
    sees rows offset[0] + row * stride[0] ... + size[0] - 1 (and likewise for columns).

    `effective`: the exact field did not fit in the largest probe image (or is global: squeeze-
    excitation blocks let every unit see the whole image), so size and offset are those of the box
    holding 99% of the gradient instead (the "effective receptive field", Luo et al. 2016)."""
    size: tuple[int, int]
    stride: tuple[int, int]
    offset: tuple[int, int]   # negative where the net pads the image
    effective: bool = False

    def box(self, row: int, col: int, side: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right), bottom/right exclusive: the unit's field clipped to a
        `side`-px image, then grown inside the image back to min(size, side) so that every patch
        of a figure has the same size (a field cut by the border shows more of the image instead)."""
        spans = []
        for axis, pos in enumerate((row, col)):
            span = min(self.size[axis], side)
            lo = min(max(self.offset[axis] + pos * self.stride[axis], 0), side - span)
            spans.append((lo, lo + span))
        (top, bottom), (left, right) = spans
        return top, left, bottom, right

    def exact_box(self, row: int, col: int, side: int) -> tuple[int, int, int, int]:
        """The field of (row, col) clipped to the image, without growing it back."""
        top, left = self.offset[0] + row * self.stride[0], self.offset[1] + col * self.stride[1]
        return (max(top, 0), max(left, 0), min(top + self.size[0], side), min(left + self.size[1], side))

    def allowed(self, height: int, width: int, side: int) -> torch.Tensor:
        """[height, width] bool: the grid positions whose field is least cut by the border of a
        `side`-px image (all those whose whole field lies inside it, when there are any)."""
        masks = []
        for axis, n in enumerate((height, width)):
            lo = self.offset[axis] + torch.arange(n) * self.stride[axis]
            cut = lo.neg().clamp(min=0) + (lo + self.size[axis] - side).clamp(min=0)
            masks.append(cut == cut.min())
        return masks[0][:, None] & masks[1][None, :]


def receptive_field(net, layer: str, side: int, max_side: int | None = None, seed: int = 0) -> ReceptiveField:
    """Measure the receptive field of `layer` empirically: the input pixels with a non-zero gradient
    of one position's activations (all channels summed), on a few random images (the union, so
    rectifiers and max-pooling switches closed on one image do not hide pixels).

    Two neighbouring positions, (r, c) and (r + 1, c + 1) near the centre of the grid, give the
    size, the stride (how far the field moves per step) and the offset. The probe image starts at
    `side` px (at least 4 strides) and doubles while the field touches its border, up to
    `max_side` (default: twice `side`, at least 4 strides); a field still larger than that is
    summarized by its effective box (see ReceptiveField): for the figure it covers the whole
    `side`-px image either way.
    """
    device = next(net.parameters()).device
    stride = net.stride_of([layer])
    # Beyond twice the image, a larger field changes nothing the figure shows (the patch is the
    # whole image, and the least-cut positions are the central ones either way).
    max_side = max_side or max(2 * side, 4 * stride)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    probe = max(side, 4 * stride)  # fields span several strides: no smaller probe can hold one
    while True:
        n = max(2, min(8, RF_PROBE_PIXELS // (probe * probe)))
        x = torch.rand(2 * n, 3, probe, probe, generator=gen).to(device).requires_grad_(True)
        with torch.enable_grad():
            act = net.features(x, [layer])[layer]
            if act.ndim != 4:
                raise ConfigError(f"layer {layer} of {net.net_name} has no spatial grid "
                                  f"(output shape {tuple(act.shape[1:])}); choose a convolutional layer")
            h, w = act.shape[2:]
            r, c = max(0, (h - 1) // 2), max(0, (w - 1) // 2)
            r2, c2 = min(r + 1, h - 1), min(c + 1, w - 1)
            score = act[:n, :, r, c].float().sum() + act[n:, :, r2, c2].float().sum()
            (grad,) = torch.autograd.grad(score, x)
        mass = [grad[:n].detach().abs().float().sum(dim=(0, 1)), grad[n:].detach().abs().float().sum(dim=(0, 1))]
        boxes = [_support(m) for m in mass]
        touches = any(b[0] == 0 or b[1] == 0 or b[2] == probe or b[3] == probe for b in boxes)
        if (touches or h < 2 or w < 2) and 2 * probe <= max_side:
            probe *= 2
            continue
        break
    grid = (max(1, round(probe / h)), max(1, round(probe / w)))
    if touches:
        (t0, l0, b0, rt0) = _support(mass[0], keep=0.99)
        return ReceptiveField((b0 - t0, rt0 - l0), grid, (t0 - r * grid[0], l0 - c * grid[1]), effective=True)
    (t0, l0, b0, rt0), (t1, l1, _, _) = boxes
    # A neighbour on the same grid cell (a 1-wide grid) gives no stride: fall back to the ratio.
    sy = t1 - t0 if r2 > r and t1 > t0 else grid[0]
    sx = l1 - l0 if c2 > c and l1 > l0 else grid[1]
    return ReceptiveField((b0 - t0, rt0 - l0), (sy, sx), (t0 - r * sy, l0 - c * sx))


def _support(mass: torch.Tensor, keep: float | None = None) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), bottom/right exclusive, of the pixels of `mass` [H, W] (gradient
    magnitudes) that are non-zero, or with `keep`, of the central `keep` fraction of the mass of
    each axis (its marginal quantiles)."""
    h, w = mass.shape
    total = float(mass.sum())
    if total == 0:  # nothing flows back (a dead unit on every probe): call it one pixel
        return h // 2, w // 2, h // 2 + 1, w // 2 + 1
    spans = []
    for marginal in (mass.sum(1), mass.sum(0)):
        if keep is None:
            idx = (marginal > 0).nonzero()[:, 0]
            spans.append((int(idx[0]), int(idx[-1]) + 1))
        else:
            cdf = marginal.double().cumsum(0) / marginal.sum()
            lo = int((cdf < (1 - keep) / 2).sum())
            hi = int((cdf < 1 - (1 - keep) / 2).sum()) + 1
            spans.append((lo, min(hi, len(marginal))))
    (top, bottom), (left, right) = spans
    return top, left, bottom, right

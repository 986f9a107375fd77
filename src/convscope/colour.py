"""Colour operations on image tensors [N, 3, H, W] in [0, 1] (pure torch, any device).

YIQ conversion, luminance-only transfer (keep one image's luminance, another's chroma), exact
histogram matching, and mean/covariance colour matching. Re-exported by `convscope.images`.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .errors import ConfigError

# Standard NTSC (FCC 1953) RGB -> YIQ matrix; rows give Y, I, Q. The inverse is computed from it
# (not the rounded published inverse) so that yiq_to_rgb(rgb_to_yiq(x)) == x to float precision.
_RGB_TO_YIQ = (
    (0.299, 0.587, 0.114),
    (0.595716, -0.274453, -0.321263),
    (0.211456, -0.522591, 0.311135),
)


def _check_nchw(x: torch.Tensor, name: str) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must have shape [N, 3, H, W], got {list(x.shape)}")


def _check_batch(source: torch.Tensor, reference: torch.Tensor) -> None:
    if reference.shape[0] not in (1, source.shape[0]):
        raise ValueError(f"reference batch must be 1 or {source.shape[0]}, got {reference.shape[0]}")


def _yiq_matrix(x: torch.Tensor, inverse: bool) -> torch.Tensor:
    # Built and inverted in float64 on the CPU (MPS has no float64), then moved to x's device.
    m = torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)
    if inverse:
        m = torch.linalg.inv(m)
    return m.to(device=x.device, dtype=x.dtype)


def rgb_to_yiq(x: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] RGB in [0, 1] -> YIQ (Y in [0, 1]; I in ~[-0.6, 0.6]; Q in ~[-0.52, 0.52])."""
    _check_nchw(x, "rgb_to_yiq input")
    return torch.einsum("ij,njhw->nihw", _yiq_matrix(x, inverse=False), x)


def yiq_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of rgb_to_yiq; [N, 3, H, W] YIQ -> RGB (not clamped)."""
    _check_nchw(x, "yiq_to_rgb input")
    return torch.einsum("ij,njhw->nihw", _yiq_matrix(x, inverse=True), x)


def luminance_transfer(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Keep the luminance (Y) of `stylized` and the chroma (I, Q) of `content`, clamped to [0, 1].

    This is Gatys et al.'s "preserve colour" by luminance-only transfer, applied after the fact.
    `content` ([1 or N, 3, h, w]) is resized bilinearly to stylized's [N, 3, H, W] if needed.
    """
    _check_nchw(stylized, "stylized")
    _check_nchw(content, "content")
    _check_batch(stylized, content)
    if content.shape[-2:] != stylized.shape[-2:]:
        content = F.interpolate(content, size=stylized.shape[-2:], mode="bilinear", align_corners=False)
    y = rgb_to_yiq(stylized)[:, :1]
    iq = rgb_to_yiq(content.to(stylized))[:, 1:].expand(stylized.shape[0], -1, -1, -1)
    return yiq_to_rgb(torch.cat([y, iq], dim=1)).clamp(0.0, 1.0)


def match_histogram(source: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Exact per-channel histogram matching of `source` [N, 3, H, W] to `reference` [1 or N, 3, h, w].

    The k-th smallest value of each source channel is replaced by the reference's value at the same
    quantile (linearly interpolated when the pixel counts differ), so with equal sizes the result's
    sorted values equal the reference's exactly. Ties are broken by position (stable sort).
    """
    _check_nchw(source, "source")
    _check_nchw(reference, "reference")
    _check_batch(source, reference)
    n, c = source.shape[:2]
    s = source.flatten(2)                                               # [N, 3, Ls]
    r_sorted = reference.to(source).flatten(2).sort(dim=-1).values.expand(n, c, -1)  # [N, 3, Lr]
    ls, lr = s.shape[-1], r_sorted.shape[-1]
    if ls == lr:
        target = r_sorted
    else:
        pos = torch.linspace(0, lr - 1, ls, device=source.device, dtype=torch.float64)
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=lr - 1)
        frac = (pos - lo).to(source.dtype)
        target = torch.lerp(r_sorted[..., lo], r_sorted[..., hi], frac)
    order = s.sort(dim=-1, stable=True).indices
    return torch.empty_like(s).scatter_(-1, order, target).view_as(source)


def match_color_stats(
    source: torch.Tensor, reference: torch.Tensor, method: str = "eigen", eps: float = 1e-5
) -> torch.Tensor:
    """Linearly recolour `source` [N, 3, H, W] to the RGB mean and covariance of `reference`.

    x' = A (x - mu_s) + mu_r with A cov_s A^T = cov_r. method="eigen" uses A = cov_r^1/2 cov_s^-1/2
    (symmetric square roots; the "image analogies" transfer of Gatys et al. 2017), "cholesky" uses
    A = L_r L_s^-1. `eps` is added to the diagonals so flat (singular) images do not blow up.
    Result clamped to [0, 1], so the statistics match exactly only when nothing was clipped.
    """
    _check_nchw(source, "source")
    _check_nchw(reference, "reference")
    _check_batch(source, reference)
    if method not in ("eigen", "cholesky"):
        raise ConfigError(f"unknown colour-matching method {method!r}; use 'eigen' or 'cholesky'")
    work = torch.float32 if source.device.type == "mps" else torch.float64
    mu_s, cov_s = _color_stats(source.to(work), eps)
    mu_r, cov_r = _color_stats(reference.to(device=source.device, dtype=work), eps)
    if method == "eigen":
        a = _sym_power(cov_r, 0.5) @ _sym_power(cov_s, -0.5)
    else:
        a = torch.linalg.cholesky(cov_r) @ torch.linalg.inv(torch.linalg.cholesky(cov_s))
    x = source.to(work).flatten(2)                                       # [N, 3, L]
    out = a @ (x - mu_s) + mu_r  # a: [1 or N, 3, 3] broadcasts over the batch
    return out.view_as(source).clamp(0.0, 1.0).to(source.dtype)


def _color_stats(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image RGB mean [N, 3, 1] and covariance [N, 3, 3] (population, plus eps * I)."""
    flat = x.flatten(2)
    mu = flat.mean(dim=-1, keepdim=True)
    centred = flat - mu
    cov = centred @ centred.transpose(1, 2) / flat.shape[-1]
    return mu, cov + eps * torch.eye(3, dtype=x.dtype, device=x.device)


def _sym_power(m: torch.Tensor, power: float) -> torch.Tensor:
    """m ** power for symmetric positive definite [..., 3, 3] matrices, via eigendecomposition."""
    vals, vecs = torch.linalg.eigh(m)
    return vecs @ torch.diag_embed(vals.clamp_min(1e-12) ** power) @ vecs.transpose(-1, -2)

"""The image prior of feature visualization (used by `featureviz`): the variables Adam optimizes, the
images they stand for, and the random transforms each step sees them through.

- parameterization: the image is a function of the variables optimized, either the pixels
  themselves or a Fourier spectrum scaled by 1/frequency (Adam then moves all frequencies about
  equally fast in *visual* terms instead of favouring the highest), with colours optionally
  decorrelated through a fixed 3x3 matrix (the square root of natural images' colour correlation)
  and a sigmoid mapping to [0, 1];
- transformation robustness: each step sees the image randomly shifted (jitter), scaled and
  rotated, so a pattern must work everywhere rather than exploit exact pixel positions;
- regularizers (for pixels mainly, where nothing else smooths): a Gaussian blur every few steps
  (applied in the frequency domain for fft) and an optional L2 decay towards grey.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

INIT_STD = 0.01  # std of the starting variables: sigmoid(~0) is a near-uniform grey

# The square root of the colour correlation of natural (ImageNet) images, as published with the
# Feature Visualization article's code (lucid's `color_correlation_svd_sqrt`): rows R, G, B; column
# 0 is the luminance direction. Scaled so its largest column has unit norm (as there), which keeps
# a unit step in the decorrelated space about a unit step in RGB.
_COLOUR_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))


def _colour_matrix(device) -> torch.Tensor:
    m = torch.tensor(_COLOUR_SQRT, dtype=torch.float32)
    return (m / m.norm(dim=0).max()).to(device)


# ----------------------------------------------------------------------------- parameterization

class ImageParam:
    """The variables Adam optimizes, and the images [B, 3, S, S] in [0, 1] they stand for.

    fft: a complex spectrum [B, 3, S, S//2+1] multiplied by a fixed 1/frequency scale before the
    inverse FFT. Natural images have about 1/f amplitude spectra; with the scale, a unit change of
    every variable changes the image as a natural image would, so Adam no longer spends its steps
    on the (many) high frequencies. The scale is normalized to unit RMS, so with the orthonormal
    FFT one step moves pixels by about lr at any size.
    pixels: the image's own values [B, 3, S, S] (before colour mixing and sigmoid).
    Both: optional colour decorrelation (fixed 3x3 mix), then a sigmoid to [0, 1].
    """

    def __init__(self, batch: int, size: int, kind: str, decorrelate: bool, gen: torch.Generator,
                 device: torch.device, power: float = 1.0):
        self.size, self.kind = size, kind
        self.colour = _colour_matrix(device) if decorrelate else None
        if kind == "fft":
            fy = torch.fft.fftfreq(size)[:, None]
            fx = torch.fft.rfftfreq(size)[None, :]
            self.freq = torch.sqrt(fy ** 2 + fx ** 2).to(device)           # cycles per pixel
            scale = self.freq.clamp_min(1.0 / size) ** -power               # 1/f, the DC term capped
            self.scale = scale / scale.pow(2).mean().sqrt()
            shape: tuple[int, ...] = (batch, 3, size, size // 2 + 1, 2)     # real, imaginary
        else:
            shape = (batch, 3, size, size)
        # Drawn on the CPU so a seed gives the same start on every device.
        self.tensor = (torch.randn(shape, generator=gen) * INIT_STD).to(device).requires_grad_(True)

    def images(self) -> torch.Tensor:
        t = self.tensor
        if self.kind == "fft":
            spectrum = torch.view_as_complex(t) * self.scale
            t = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho")
        if self.colour is not None:
            t = torch.einsum("ij,bjhw->bihw", self.colour, t)
        return torch.sigmoid(t)

    @torch.no_grad()
    def blur(self, sigma: float) -> None:
        """Gaussian blur of the image by `sigma` px, applied to the variables (both are linear)."""
        if sigma <= 0:
            return
        if self.kind == "fft":
            # A Gaussian's Fourier transform: exp(-2 pi^2 sigma^2 f^2), f in cycles per pixel.
            self.tensor.mul_(torch.exp(-2 * math.pi ** 2 * sigma ** 2 * self.freq ** 2)[..., None])
        else:
            self.tensor.copy_(gaussian_blur(self.tensor, sigma))

    @torch.no_grad()
    def decay(self, fraction: float) -> None:
        """Pull towards zero (grey after the sigmoid) by `fraction`: Yosinski et al.'s L2 decay."""
        if fraction > 0:
            self.tensor.mul_(1.0 - fraction)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B, C, H, W] with reflected borders (radius 3 sigma)."""
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    if radius < 1:
        return x
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype) / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


# ---------------------------------------------------------------------------------- transforms

def random_transform(x: torch.Tensor, copies: int, jitter: int, scale: float, rotate: float,
                     gen: torch.Generator) -> torch.Tensor:
    """`copies` randomly shifted, zoomed and rotated versions of each image of x [B, 3, S, S],
    stacked copy-major ([copies * B, 3, S, S]); what falls outside the frame is grey.

    One affine resampling per image (bilinear) instead of lucid's chain of pad / jitter / scale /
    rotate / jitter: the same family of transforms, one interpolation. Parameters are drawn on the
    CPU (same transforms on every device for a seed).
    """
    b, _, h, w = x.shape
    n = b * copies
    if not (jitter or scale or rotate):
        return x.repeat(copies, 1, 1, 1)
    u = torch.rand(n, 3, generator=gen) * 2 - 1                       # zoom, angle in [-1, 1]
    shift = torch.randint(-jitter, jitter + 1, (n, 2), generator=gen).float()
    zoom = 1 + scale * u[:, 0]
    angle = math.radians(rotate) * u[:, 1]
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # affine_grid maps output to input coordinates in [-1, 1]: one pixel is 2/side.
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0] * 2 / w], 1),
                         torch.stack([sin, cos, shift[:, 1] * 2 / h], 1)], 1).to(x.device, x.dtype)
    grid = F.affine_grid(theta, [n, 3, h, w], align_corners=False)
    # Sampling x - 0.5 with zero padding and adding 0.5 back pads with grey (lucid pads with 0.5 too).
    return F.grid_sample(x.repeat(copies, 1, 1, 1) - 0.5, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False) + 0.5

"""Built-in demo inputs: a sample photo an installed dependency ships, and a style drawn in code.

No third-party image is committed: the content is matplotlib's bundled `grace_hopper.jpg`, and the
style is a swirling brush-stroke painting generated here (deterministic for a seed).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .errors import ImageError

# Night-sky palette: deep blues and teal with warm yellow and cream strokes.
PALETTE = [(16, 32, 84), (30, 64, 140), (52, 104, 178), (40, 140, 160), (94, 150, 200),
           (230, 200, 70), (245, 225, 140), (250, 245, 215)]


def sample_photo_path() -> Path:
    """matplotlib's sample photo (Grace Hopper, public domain, US Navy)."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        raise ImageError(f"matplotlib's sample image is missing ({path}); reinstall matplotlib or "
                         "pass your own images to `convscope stylize`")
    return path


def swirl_painting(size: int = 512, seed: int = 0) -> Image.Image:
    """A square 'painting' of short strokes that follow the flow around a few vortices, plus stars.

    Strokes are drawn along the flow field's direction at each point, so the Gram statistics carry
    oriented, curved, high-contrast texture in a limited palette: a good style for a demo.
    """
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), PALETTE[0])
    draw = ImageDraw.Draw(img)
    vortices = [(rng.uniform(0.15, 0.85) * size, rng.uniform(0.15, 0.6) * size,
                 rng.choice([-1.0, 1.0])) for _ in range(3)]

    def direction(x: float, y: float) -> float:
        vx, vy = 0.6, 0.15  # a gentle prevailing drift, so the field is never still
        for cx, cy, spin in vortices:
            dx, dy = x - cx, y - cy
            r2 = dx * dx + dy * dy + (0.05 * size) ** 2
            vx += -spin * dy * size / r2 * 0.35
            vy += spin * dx * size / r2 * 0.35
        return math.atan2(vy, vx)

    width = max(2, size // 110)
    for _ in range(int(7 * size * size / 1000)):
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        sky = y < 0.72 * size
        colour = PALETTE[rng.choice(8, p=[.12, .2, .2, .13, .15, .1, .06, .04] if sky else
                                    [.3, .3, .2, .1, .04, .03, .02, .01])]
        points = [(x, y)]
        for _ in range(int(rng.integers(3, 7))):  # follow the field for a few steps: a curved stroke
            a = direction(x, y)
            x, y = x + math.cos(a) * size / 90, y + math.sin(a) * size / 90
            points.append((x, y))
        draw.line(points, fill=colour, width=width)
    for _ in range(6):  # stars: concentric glowing rings
        cx, cy = rng.uniform(0.05, 0.95) * size, rng.uniform(0.05, 0.5) * size
        for k, colour in enumerate([(250, 235, 160), (240, 210, 90), (200, 200, 120)]):
            r = size * (0.035 - 0.01 * k)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=width)
        r = size * 0.012
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(255, 250, 220))
    # A slight blur merges strokes into paint without losing their direction.
    return img.filter(ImageFilter.GaussianBlur(radius=size / 700))

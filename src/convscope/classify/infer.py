"""Inference for classifiers: logits of many uint8 images in batches, with optional test-time
augmentation (a mirror, and 1 px shifts: `classify evaluate --tta`, and training's validation)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .config import TTA_MODES


def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x moved dy px down and dx px right, the uncovered border repeating the edge pixels."""
    pad = max(abs(dy), abs(dx))
    h, w = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    return padded[..., pad - dy:pad - dy + h, pad - dx:pad - dx + w]


def tta_logits(model: nn.Module, x: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """Logits of a batch with test-time augmentation: "flip" averages the image and its mirror;
    "shift" adds both of those moved 1 px down-right and 1 px up-left (weights 1/2 unmoved, 1/4 each
    shifted pair; the level airbench calls 2)."""
    if tta not in TTA_MODES:
        raise ConfigError(f"test-time augmentation must be one of {', '.join(TTA_MODES)}, not {tta!r}")

    def pair(v: torch.Tensor) -> torch.Tensor:
        return (model(v).float() + model(v.flip(3)).float()) / 2

    if tta == "none":
        return model(x).float()
    if tta == "flip":
        return pair(x)
    return pair(x) / 2 + (pair(_shifted(x, 1, 1)) + pair(_shifted(x, -1, -1))) / 4


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, device, batch: int = 500,
                   channels_last: bool = False, tta: str = "none") -> torch.Tensor:
    """Logits for uint8 images [N, 3, H, W] (float32, on the CPU); `tta` as in `tta_logits`."""
    model.eval()
    out = []
    for start in range(0, images.shape[0], batch):
        x = images[start:start + batch].to(device).float().div_(255)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(tta_logits(model, x, tta).cpu())
    return torch.cat(out) if out else torch.zeros(0)

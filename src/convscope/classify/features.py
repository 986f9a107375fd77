"""Bottleneck features of a frozen backbone: computed once per (backbone, layer, input size, pool,
data) and cached on disk, so a transfer head trains on them in seconds and a second run starts at
once. The data enter the key by a digest of their pixels and labels, and so does arithmetic other
than float32 (optim.feature_precision: bf16 on CPUs with native bf16 unless asked otherwise; see
README, CIFAR-10 on the CPU, for what it saved and the accuracy beside float32's)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch

from .data import ImageData
from .models import TransferModel
from .optim import precision_context
from .run import RunError, load_tensors, save_tensors


def data_digest(data: ImageData) -> str:
    h = hashlib.sha256()
    h.update(str(tuple(data.images.shape)).encode())
    h.update(data.labels.numpy().tobytes())
    h.update(data.images.contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


@torch.no_grad()
def bottleneck_features(model: TransferModel, data: ImageData, device, batch: int, cache_dir: Path | None,
                        report: Callable[[int, int], None] | None = None, precision: str = "fp32",
                        channels_last: bool = False) -> torch.Tensor:
    """float32 features [N, ...] of `data`'s images (on the CPU); `precision` (resolved: fp32, bf16
    or fp16) is the autocast the backbone runs under, `channels_last` its images' layout."""
    device = torch.device(device)
    # (float32 keys as before this option existed, so caches written then stay valid)
    arithmetic = "" if precision == "fp32" else f"|{precision}"
    key = hashlib.sha256(f"{model.backbone_name}|{model.feature_layer}|{model.input_size}|{model.pool}|"
                         f"{data_digest(data)}{arithmetic}".encode()).hexdigest()[:32]
    path = cache_dir / f"{model.backbone_name}-{model.input_size}px-{key}.safetensors" if cache_dir else None
    if path is not None and path.exists():
        try:
            tensors, _ = load_tensors(path)
            return tensors["features"]
        except RunError:
            pass  # damaged: recompute and overwrite
    model.eval()
    autocast, _ = precision_context(precision, device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = []
    n = len(data)
    for start in range(0, n, batch):
        x = data.images[start:start + batch].to(device).to(dtype=torch.float32, memory_format=fmt).div_(255)
        with autocast:
            out.append(model.bottleneck(x).float().cpu())
        if report:
            report(min(start + batch, n), n)
    feats = torch.cat(out)
    if path is not None:
        save_tensors(path, {"features": feats}, {"backbone": model.backbone_name, "size": model.input_size})
    return feats

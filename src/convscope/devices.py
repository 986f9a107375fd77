"""Device selection: passed in everywhere, resolved once here."""

from __future__ import annotations

import torch

from .errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available (else MPS, else CPU); explicit names are checked, not trusted."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but no CUDA GPU is available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA GPU(s) found")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' requested but Metal is not available; use --device cpu")
    return device


def default_precision(device: torch.device) -> str:
    """TF32 on CUDA (the speed of tensor cores, float32 accumulation), float32 elsewhere."""
    return "tf32" if device.type == "cuda" else "fp32"

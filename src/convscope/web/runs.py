"""Trained classifier runs the web UI offers (`convscope serve --runs DIR`)."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

RUN_PREFIX = "run: "
MAX_RUNS_LISTED = 200      # run folders offered from --runs
RUNS_DEPTH = 4             # how deep under --runs they are looked for


def find_runs(root: Path | None) -> dict[str, Path]:
    """Classifier run folders under `root` (their config.json says so), by label: at most
    MAX_RUNS_LISTED, at most RUNS_DEPTH folders down, hidden folders skipped. Found once at start:
    the browser picks a label, never a path."""
    if root is None:
        return {}
    from ..classify.run import CONFIG, RunDir, RunError

    found: dict[str, Path] = {}
    for folder, subfolders, files in os.walk(root):
        here = Path(folder)
        depth = len(here.relative_to(root).parts)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".")) if depth < RUNS_DEPTH else []
        if CONFIG not in files:
            continue
        try:
            RunDir(here).info()
        except (RunError, OSError):
            continue
        subfolders[:] = []  # a run's own folders (tensorboard, ...) hold no runs
        found[RUN_PREFIX + (str(here.relative_to(root)) if depth else root.name)] = here
        if len(found) >= MAX_RUNS_LISTED:
            break
    return found


def load_run_net(label: str, folder: Path, device):
    """The run's model as a net named by its label (the page never shows a server path). A run
    folder damaged since the server found it (model file gone, truncated or of another shape;
    config.json edited) is a one-line message naming the run; what is wrong, with the path and
    the CLI's advice, goes to the server log, which is the server operator's to act on."""
    from ..classify.predict import as_net, load_run
    from ..errors import ConfigError, UserError

    try:
        net = as_net(load_run(folder, device))
    except Exception as exc:  # noqa: BLE001 (any damage: the page says which run, the log says why)
        text = str(exc).lower()
        if isinstance(exc, MemoryError) or "out of memory" in text:
            raise  # the device's state, not the run's: the page says so
        detail = str(exc) if isinstance(exc, UserError) else "".join(traceback.format_exception(exc))
        print(f"convscope serve: {label} ({folder}) cannot be loaded: {detail}", file=sys.stderr)
        raise ConfigError(f"{label} cannot be loaded: its files on this server are damaged or incomplete (the "
                          "server log says what is wrong); choose another model") from None
    net.net_name = label  # its name in messages
    return net

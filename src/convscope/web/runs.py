"""Trained classifier runs the web UI offers (`convscope serve --runs DIR`)."""

from __future__ import annotations

import os
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

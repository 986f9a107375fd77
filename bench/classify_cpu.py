"""`convscope classify train` on the CPU, this checkout against another one, alternating.

Each run is a subprocess `python -m convscope classify train` with that checkout's src/ first on
the path, on the first N images per class of the JPEG copy of CIFAR-10 (bench/cifar10.py unpacks
it; --limit, default 300: 3000 training and 3000 test images), with the decoded images cached once
before any timing and the bottleneck features of transfer rows recomputed in every run (removed
before it), as a user's first run computes them. The order of the sides alternates across repeats,
so other work on the machine skews both alike. Per row and side: median wall seconds (start-up,
feature pass and training), the median of the run's epoch seconds (training and validation, from
metrics.csv), the median CPU seconds of the run (user + system) and the final test accuracy of each run.

    git worktree add /tmp/convscope-base HEAD~3      # the code to compare against
    python bench/classify_cpu.py --base /tmp/convscope-base --rows simple transfer:vgg19@32 --repeats 3
    python bench/classify_cpu.py --rows simple -- --precision fp32      # this checkout alone, an option added

A row is MODEL[@INPUT_SIZE][+OPTION=VALUE...] as in bench/cifar10.py; `--epochs` (default 1) applies
to rows that do not set it. Options after `--` go to both sides' every run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "src"))

from cifar10 import DATA, first_per_class, parse_row, unpack  # noqa: E402
from common import finish  # noqa: E402


def run_train(checkout: Path, data: Path, cache: Path, argv: list[str]) -> dict:
    """One `classify train` of `checkout` into a fresh run folder: wall seconds, epoch seconds, accuracy."""
    run = Path(tempfile.mkdtemp(prefix="run_", dir=cache))
    shutil.rmtree(cache / "cache" / "features", ignore_errors=True)  # each run computes its own
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "convscope", "classify", "train", "--data", str(data),
                           "-o", str(run), "--device", "cpu", "--cache-dir", str(cache / "cache"), "-q", *argv],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    try:
        if done.returncode != 0:
            raise SystemExit(f"classify train failed in {checkout}: {done.stderr.strip().splitlines()[-1:]}")
        with open(run / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        config = json.loads((run / "config.json").read_text()).get("config", {})
    finally:
        shutil.rmtree(run, ignore_errors=True)
    return {"wall": wall, "cpu": cpu, "epoch_s": statistics.median(float(r["seconds"]) for r in rows),
            "acc": float(rows[-1]["val_acc"]), "precision": config.get("precision")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", type=Path, default=None, help="another checkout to compare against (its src/)")
    p.add_argument("--rows", nargs="+", default=["simple"], help="MODEL[@SIZE][+OPTION=VALUE...] (default simple)")
    p.add_argument("--epochs", type=int, default=1, help="epochs of rows that do not set them (default 1)")
    p.add_argument("--limit", type=int, default=300, help="images per class in each split (default 300)")
    p.add_argument("--repeats", type=int, default=3, help="runs per row and side (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "convscope-bench")
    p.add_argument("--data", type=Path, default=DATA, help="folder of cifar10-jpeg-{train,test}.tar.xz")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    p.add_argument("extra", nargs="*", help="after --: more `classify train` options for both sides")
    a = p.parse_args()
    if a.repeats < 1 or a.limit < 1 or a.epochs < 1:
        p.error("--repeats, --limit and --epochs must be at least 1")
    if a.base is not None and not (a.base / "src" / "convscope").is_dir():
        p.error(f"--base {a.base} is not a convscope checkout (no src/convscope)")
    parsed = []
    for row in a.rows:
        try:
            model, extra = parse_row(row)
        except ValueError as e:
            p.error(str(e))
        if "--epochs" not in extra:
            extra = [*extra, "--epochs", str(a.epochs)]
        parsed.append((row, [*extra, "--model", model, "--seed", str(a.seed), *a.extra]))
    data = first_per_class(unpack(a.cache, a.data), a.limit)
    sides = {"this": REPO} if a.base is None else {"base": a.base.resolve(), "this": REPO}
    # Decode once, untimed (this checkout's cache key; a base with another key decodes in its first run).
    from convscope.classify.data import load_data
    load_data(str(data), size=32, cache_dir=str(a.cache / "cache" / "data"))
    print(f"load average at the start: {os.getloadavg()}", flush=True)
    rows = []
    for row, argv in parsed:
        runs: dict[str, list[dict]] = {name: [] for name in sides}
        for r in range(a.repeats):
            for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                got = run_train(sides[name], data, a.cache, argv)
                runs[name].append(got)
                print(f"  {row} {name:4} run {r + 1}: wall {got['wall']:7.2f} s  cpu {got['cpu']:7.2f} s  "
                      f"epoch {got['epoch_s']:7.2f} s  "
                      f"acc {got['acc']:.4f}  ({got['precision']})", flush=True)
        for name, rs in runs.items():
            rows.append({"row": row, "side": name, "checkout": str(sides[name]), "precision": rs[0]["precision"],
                         "wall": statistics.median(x["wall"] for x in rs),
                         "cpu": statistics.median(x["cpu"] for x in rs),
                         "epoch_s": statistics.median(x["epoch_s"] for x in rs), "acc": [x["acc"] for x in rs]})
    print(f"load average at the end: {os.getloadavg()}")
    print(f"\n{'row':34} {'side':5} {'precision':9} {'wall s':>8} {'cpu s':>8} {'epoch s':>8}  test accuracy per run")
    for r in rows:
        print(f"{r['row']:34} {r['side']:5} {str(r['precision']):9} {r['wall']:8.2f} {r['cpu']:8.2f} "
              f"{r['epoch_s']:8.2f}  "
              + " ".join(f"{x:.4f}" for x in r["acc"]))
    if a.base is not None:
        for base, this in zip(rows[::2], rows[1::2]):
            print(f"{base['row']}: base / this: wall {base['wall'] / this['wall']:.2f}x, "
                  f"cpu {base['cpu'] / this['cpu']:.2f}x, "
                  f"epoch {base['epoch_s'] / this['epoch_s']:.2f}x")
    finish(rows, a.json)


if __name__ == "__main__":
    main()

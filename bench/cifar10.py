"""CIFAR-10 benchmark: accuracy on the 10,000 test images, wall time and epochs, per model recipe.

Runs `convscope classify train` end to end (a subprocess: start-up, decoding and feature caching
included) on the JPEG copy of CIFAR-10 in ../shared/data, then reads the run's final test accuracy.
The decoded images are cached once (not timed twice); bottleneck features are computed inside the
timed run, as a user would see them the first time.

    python bench/cifar10.py [--rows simple transfer:vgg19@32 ...] [--device cuda] [--json FILE]

A row is MODEL[@INPUT_SIZE][+OPTION=VALUE...], e.g. `transfer:vgg19@64`, `vgg19-bn+epochs=30`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import finish  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
DEFAULT_ROWS = ["simple", "transfer:vgg19@32", "transfer:vgg19@64", "transfer:vgg19@128",
                "transfer:efficientnet_lite0@224", "vgg19-bn"]
REFERENCE = {"simple": "63.5% (reference, original pixels, 10 epochs)",
             "transfer:vgg19@32": "64% (reference)", "transfer:efficientnet_lite0@224": "aim 88%",
             "vgg19-bn": "93-94% (reference, original pixels); aim 92%"}


def unpack(cache: Path) -> Path:
    root = cache / "cifar10-jpeg"
    if not (root / "test").is_dir() or not (root / "train").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        for split in ("train", "test"):
            with tarfile.open(DATA / f"cifar10-jpeg-{split}.tar.xz") as tar:
                tar.extractall(root, filter="data")
    return root


def parse_row(row: str) -> tuple[str, list[str]]:
    model, *options = row.split("+")
    args = []
    if "@" in model:
        model, size = model.split("@")
        args += ["--input-size", size]
    for opt in options:
        key, value = opt.split("=", 1)
        args += [f"--{key.replace('_', '-')}", value]
    return model, args


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "convscope-bench")
    parser.add_argument("--json", type=Path)
    a = parser.parse_args()
    data = unpack(a.cache)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    rows = []
    for row in a.rows:
        model, extra = parse_row(row)
        run = Path(tempfile.mkdtemp(prefix="run_", dir=a.cache))
        run.rmdir()
        cmd = [sys.executable, "-m", "convscope.cli", "classify", "train", "--data", str(data), "--model", model,
               "-o", str(run), "--device", a.device, "--cache-dir", str(a.cache / "cache"), "-q", *extra]
        # Warm the decoded-image cache outside the timing (a user decodes once, then trains many times).
        subprocess.run([sys.executable, "-c", "from convscope.classify.data import load_data; "
                        f"load_data({str(data)!r}, cache_dir={str(a.cache / 'cache' / 'data')!r})"],
                       env=env, check=True)
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            print(f"{row}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        lines = (run / "metrics.csv").read_text().splitlines()
        last = dict(zip(lines[0].split(","), lines[-1].split(",")))
        result = {"row": row, "accuracy": float(last["val_acc"]), "seconds": round(seconds, 1),
                  "epochs": int(last["epoch"]), "reference": REFERENCE.get(row, "")}
        rows.append(result)
        print(f"{row:36s} {result['accuracy']:.4f}  {seconds:8.1f} s  {result['epochs']:3d} epochs", flush=True)
    print("\n| model | test accuracy | wall time | epochs | reference |\n|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['row']} | {100 * r['accuracy']:.2f}% | {r['seconds']:.0f} s | {r['epochs']} | {r['reference']} |")
    finish(rows, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

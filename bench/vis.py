"""Time each "see inside" command at its default settings, end to end, on CPU and (if present) GPU.

Each command runs as a subprocess of the CLI (start-up, weights and figure writing included: what
a user waits for) with `-q`, and its sidecar's figure of merit is printed next to the time. Run
from anywhere; inputs default to ../shared/data/nst-inputs:

    python bench/vis.py [--devices cpu cuda] [--repeats 1] [--json FILE]

`--smoke` checks that every command still runs, in seconds: tiny sizes, a step or two, 8 photos
for top-activations. Its times and figures are not benchmarks.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import finish  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "nst-inputs"

# command -> (arguments before the options, sidecar key holding its figure of merit, what it is)
COMMANDS = {
    "activations": (["{photo}"], None, "feature-map grid of relu3_1"),
    "invert": (["{photo}"], "error", "normalized representation error"),
    "texture": (["{painting}"], "final_losses.gram", "Gram loss (relative)"),
    "dream": (["{photo}"], "objective", "objective (mean squared activation, per position)"),
    "featureviz": ([], None, "16 channels of the default layer (vgg19)"),
    "classviz": ([], None, "class 543 (dumbbell), efficientnet_lite0"),
    "explain": (["{photo}"], None, "Grad-CAM, guided backprop, deconvnet (efficientnet_lite0)"),
    "top-activations": (["{folder}"], None, "8 channels over the photo folder (vgg19)"),
}
# Arguments a command needs beyond its defaults (classviz has no default class).
EXTRA = {"classviz": ["--class", "543"]}
# --smoke: the least work each command accepts, so a broken command shows in seconds, not minutes.
SMOKE = {"activations": ["--size", "64"],
         "invert": ["--size", "64", "--iterations", "2"],
         "texture": ["--size", "64", "64", "--source-size", "64", "--iterations", "2", "--warmup", "1"],
         "dream": ["--size", "64", "--octaves", "1", "--steps", "1"],
         "featureviz": ["--size", "64", "--steps", "2", "--channels", "0-1"],
         "classviz": ["--size", "64", "--steps", "2"],
         "explain": ["--size", "64"],
         "top-activations": ["--size", "64", "--channels", "0-1", "--top", "2"]}
SMOKE_PHOTOS = 8


def available(command: str) -> bool:
    """Commands are modules of convscope.commands; benchmark those this checkout has."""
    sys.path.insert(0, str(REPO / "src"))
    return importlib.util.find_spec(f"convscope.commands.{command.replace('-', '_')}") is not None


def figure(meta: dict, key: str | None):
    value = meta
    for part in (key or "").split("."):
        if not part:
            return None
        value = value.get(part) if isinstance(value, dict) else None
    return value


def run(command: str, device: str, photo: Path, painting: Path, folder: Path,
        photos: Path | None = None, smoke: bool = False) -> tuple[float, object]:
    positional, key, _ = COMMANDS[command]
    out = folder / f"{command}_{device}.png"
    args = [a.format(photo=photo, painting=painting, folder=photos) for a in positional]
    cmd = [sys.executable, "-m", "convscope.cli", command, *args, *EXTRA.get(command, []),
           *(SMOKE[command] if smoke else []), "-o", str(out),
           "--device", device, "-q"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-10:])
        raise SystemExit(f"{command} on {device} failed (exit {done.returncode}):\n{tail}")
    meta = json.loads(out.with_suffix(".json").read_text())
    return seconds, figure(meta, key)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=DATA / "tubingen.jpg")
    parser.add_argument("--painting", type=Path, default=DATA / "starry_night.jpg")
    parser.add_argument("--photos", type=Path, default=DATA.parent / "photos-256.tar",
                        help="folder (or .tar of one) of photos for top-activations (default: the 1000 "
                             "photos of ../shared/data/photos-256.tar, unpacked to a temporary folder)")
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--commands", nargs="+", default=list(COMMANDS), choices=list(COMMANDS))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--smoke", action="store_true",
                        help=f"only check that each command runs: tiny sizes, 1-2 steps, {SMOKE_PHOTOS} photos "
                             "(not a benchmark)")
    a = parser.parse_args()
    for path in (a.photo, a.painting):
        if not path.is_file():
            raise SystemExit(f"input image not found: {path} (pass --photo / --painting)")
    import torch

    devices = a.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    commands = [c for c in a.commands if available(c)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_vis_") as tmp:
        photos = a.photos
        if photos.suffix == ".tar" and "top-activations" in commands:
            import tarfile

            with tarfile.open(photos) as tar:
                members = [m for m in tar.getmembers() if m.isfile()][:SMOKE_PHOTOS] if a.smoke else None
                tar.extractall(Path(tmp) / "photos", members, filter="data")
            photos = Path(tmp) / "photos"
        for command in commands:
            for device in devices:
                times, merit = [], None
                for _ in range(a.repeats):
                    seconds, merit = run(command, device, a.photo, a.painting, Path(tmp), photos, a.smoke)
                    times.append(seconds)
                rows.append({"command": command, "device": device, "seconds": statistics.median(times),
                             "runs": times, "merit": merit, "merit_is": COMMANDS[command][2]})
                print(f"{command:12s} {device:5s} {statistics.median(times):7.1f} s  {COMMANDS[command][2]}: "
                      f"{merit if merit is not None else '-'}", flush=True)
    print(f"\n| command | device | seconds (median of {a.repeats}) | figure of merit |\n|---|---|---:|---|")
    for r in rows:
        merit = f"{r['merit_is']}: {r['merit']:.4g}" if isinstance(r["merit"], (int, float)) else r["merit_is"]
        print(f"| {r['command']} | {r['device']} | {r['seconds']:.1f} | {merit} |")
    finish(rows, a.json)
    if a.smoke:
        print("\nsmoke run: every command ran, at tiny settings: these are not benchmark figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time each "see inside" command at its default settings, end to end, on CPU and (if present) GPU.

Each command runs as a subprocess of the CLI (start-up, weights and figure writing included: what
a user waits for) with `-q`, and its sidecar's figure of merit is printed next to the time. Run
from anywhere; inputs default to ../shared/data/nst-inputs:

    python bench/vis.py [--devices cpu cuda] [--repeats 1] [--json FILE]

`--base PATH` times the same commands from another checkout too (its src/ first on the path), the
two sides alternating run by run (another process on the machine then skews both alike), and
prints each side's median and the ratio:

    git worktree add /tmp/convscope-base HEAD~3      # the code to compare against
    python bench/vis.py --base /tmp/convscope-base --repeats 3 --commands texture invert

`--smoke` checks that every command still runs, in seconds: tiny sizes, a step or two, 8 photos
for top-activations. Its times and figures are not benchmarks.
"""

from __future__ import annotations

import argparse
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


def available(command: str, checkout: Path = REPO) -> bool:
    """Commands are modules of convscope.commands; benchmark those the checkout has."""
    return (checkout / "src" / "convscope" / "commands" / f"{command.replace('-', '_')}.py").is_file()


def figure(meta: dict, key: str | None):
    value = meta
    for part in (key or "").split("."):
        if not part:
            return None
        value = value.get(part) if isinstance(value, dict) else None
    return value


def run(command: str, device: str, photo: Path, painting: Path, folder: Path,
        photos: Path | None = None, smoke: bool = False, checkout: Path = REPO) -> tuple[float, object]:
    positional, key, _ = COMMANDS[command]
    out = folder / f"{command}_{device}.png"
    args = [a.format(photo=photo, painting=painting, folder=photos) for a in positional]
    cmd = [sys.executable, "-m", "convscope.cli", command, *args, *EXTRA.get(command, []),
           *(SMOKE[command] if smoke else []), "-o", str(out),
           "--device", device, "-q"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(checkout / "src"), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-10:])
        raise SystemExit(f"{command} on {device} failed in {checkout} (exit {done.returncode}):\n{tail}")
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
    parser.add_argument("--base", type=Path, default=None,
                        help="another checkout to time side by side with this one (alternating runs)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"only check that each command runs: tiny sizes, 1-2 steps, {SMOKE_PHOTOS} photos "
                             "(not a benchmark)")
    a = parser.parse_args()
    if a.repeats < 1:
        parser.error("--repeats must be at least 1")
    if a.base is not None and not (a.base / "src" / "convscope").is_dir():
        parser.error(f"--base {a.base} is not a convscope checkout (no src/convscope)")
    for path in (a.photo, a.painting):
        if not path.is_file():
            raise SystemExit(f"input image not found: {path} (pass --photo / --painting)")
    import torch

    devices = a.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    sides = {"this": REPO} if a.base is None else {"base": a.base.resolve(), "this": REPO}
    commands = [c for c in a.commands if all(available(c, checkout) for checkout in sides.values())]
    if os.getloadavg()[0] > 0.5:
        print(f"warning: load average {os.getloadavg()[0]:.1f}: other work skews wall times", file=sys.stderr)
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
                times: dict[str, list[float]] = {side: [] for side in sides}
                merits: dict[str, object] = {}
                for r in range(a.repeats):
                    for side in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                        seconds, merits[side] = run(command, device, a.photo, a.painting, Path(tmp), photos,
                                                    a.smoke, sides[side])
                        times[side].append(seconds)
                for side in sides:
                    rows.append({"command": command, "device": device, "side": side, "checkout": str(sides[side]),
                                 "seconds": statistics.median(times[side]), "runs": times[side],
                                 "merit": merits[side], "merit_is": COMMANDS[command][2]})
                    merit = merits[side]
                    print(f"{command:12s} {device:5s} {side:4s} {statistics.median(times[side]):7.1f} s  "
                          f"{COMMANDS[command][2]}: {merit if merit is not None else '-'}", flush=True)
    print(f"\n| command | device | {' | '.join(f'{s} seconds' for s in sides)} |"
          f"{' base / this |' if len(sides) == 2 else ''} figure of merit |")
    print(f"|---|---|{'---:|' * len(sides)}{'---:|' if len(sides) == 2 else ''}---|")
    for i in range(0, len(rows), len(sides)):
        group = rows[i:i + len(sides)]
        r = group[-1]
        merit = " / ".join(f"{g['merit']:.4g}" for g in group if isinstance(g["merit"], (int, float)))
        merit = f"{r['merit_is']}: {merit}" if merit else r["merit_is"]
        ratio = f" {group[0]['seconds'] / r['seconds']:.2f}x |" if len(group) == 2 else ""
        seconds = " | ".join(f"{g['seconds']:.1f}" for g in group)
        print(f"| {r['command']} | {r['device']} | {seconds} |"
              f"{ratio} {merit} |")
    finish(rows, a.json)
    if a.smoke:
        print("\nsmoke run: every command ran, at tiny settings: these are not benchmark figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())

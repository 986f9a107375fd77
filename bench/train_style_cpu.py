"""`train-style` and `train-arbitrary` steps on the CPU, this checkout against another one, alternating.

Each run is a subprocess that imports convscope from that checkout's src/ and trains from random
weights for --steps steps (batch --batch of --size px crops, the defaults of the recipes that made
the built-in models: 8 and 256) on a folder of synthetic photos made once, with starry_night.jpg as
the style (train-arbitrary, with VGG19 or `--encoder lite`: the photos restyled by each other).
The first two steps are warm-up; the figure is the median seconds of the steps after them, read
from the trainer's progress callback. The sides alternate across repeats, so other work on the machine skews both alike.

    git worktree add --detach /tmp/convscope-base HEAD~1      # the code to compare against
    python bench/train_style_cpu.py --base /tmp/convscope-base --repeats 3
    python bench/train_style_cpu.py --kinds style --steps 6    # this checkout alone
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from common import finish  # noqa: E402

STYLE = REPO.parent / "shared" / "data" / "nst-inputs" / "starry_night.jpg"

# Run inside the subprocess: argv = kind, photos folder, style, output, steps, batch, size, threads.
CHILD = r"""
import json, sys, time
import torch
kind, photos, style, out, steps, batch, size, threads = sys.argv[1:]
torch.set_num_threads(int(threads))
from convscope.fast.config import TrainArbitraryConfig, TrainStyleConfig
from convscope.fast.train import train_arbitrary, train_style
stamps = []
def seen(p):
    stamps.append(time.perf_counter())
common = dict(steps=int(steps), batch_size=int(batch), size=int(size), device="cpu", preview_every=0,
              checkpoint_every=int(steps))
if kind == "style":
    train_style(style, photos, out, TrainStyleConfig(**common), callback=seen)
else:
    lite = {"encoder": "lite"} if kind == "lite" else {}
    train_arbitrary(photos, photos, out, TrainArbitraryConfig(**common, **lite), callback=seen)
gaps = [b - a for a, b in zip(stamps, stamps[1:])][2:]
print(json.dumps({"step_seconds": gaps}))
"""


def make_photos(folder: Path, n: int = 24, side: int = 320) -> Path:
    """Smooth random colour fields with edges: enough like photos for the losses to mean something."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((side, side * 3 // 4), Image.Resampling.BICUBIC)
        img.save(folder / f"p{i:02d}.jpg", quality=90)
    return folder


def run(checkout: Path, kind: str, photos: Path, a, work: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    out = Path(tempfile.mkdtemp(dir=work)) / "model.safetensors"
    done = subprocess.run([sys.executable, "-c", CHILD, kind, str(photos), str(a.style), str(out), str(a.steps),
                           str(a.batch), str(a.size), str(a.threads)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{kind} training failed in {checkout}: {done.stderr.strip().splitlines()[-1:]}")
    gaps = json.loads(done.stdout.strip().splitlines()[-1])["step_seconds"]
    return statistics.median(gaps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, default=None, help="another checkout to compare against")
    ap.add_argument("--kinds", nargs="+", default=["style", "arbitrary"], choices=["style", "arbitrary", "lite"],
                    help="style: train-style; arbitrary: train-arbitrary; lite: train-arbitrary --encoder lite")
    ap.add_argument("--steps", type=int, default=8, help="steps per run (the first two are not timed)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--style", type=Path, default=STYLE)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    if a.steps < 4:
        ap.error("--steps must be at least 4 (two warm-up steps, then two timed)")
    if not a.style.is_file():
        ap.error(f"no style image {a.style}")
    sides = [("this", REPO)] + ([("base", a.base.resolve())] if a.base else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="train_style_cpu_") as tmp:
        work = Path(tmp)
        photos = make_photos(work / "photos")
        for kind in a.kinds:
            times: dict[str, list[float]] = {name: [] for name, _ in sides}
            for r in range(a.repeats):
                for name, checkout in (sides if r % 2 == 0 else sides[::-1]):
                    times[name].append(run(checkout, kind, photos, a, work))
                    print(f"{kind} {name}: {times[name][-1]:.3f} s a step", file=sys.stderr, flush=True)
            label = {"style": "train-style", "arbitrary": "train-arbitrary", "lite": "train-arbitrary --encoder lite"}
            row = {"kind": label[kind], **{f"{n}_s_per_step": statistics.median(v) for n, v in times.items()},
                   "runs": times}
            if a.base:
                row["speed-up"] = row["base_s_per_step"] / row["this_s_per_step"]
            rows.append(row)
    print(f"\n| training, batch {a.batch} of {a.size} px, CPU | this s/step | base s/step | speed-up |")
    print("|---|---:|---:|---:|")
    for row in rows:
        base = f"{row['base_s_per_step']:.3f}" if a.base else "-"
        ratio = f"{row['speed-up']:.2f}x" if a.base else "-"
        print(f"| {row['kind']} | {row['this_s_per_step']:.3f} | {base} | {ratio} |")
    finish(rows, a.json)


if __name__ == "__main__":
    main()

"""`convscope demo` end to end, this checkout against another one, alternating, on the CPU.

Each run is a subprocess `python -m convscope demo` with that checkout's src/ first on the path, so
start-up, imports, weight loading and image I/O count as a user sees them. The order alternates
across repeats (another process on the machine then skews both sides alike); the table gives each
side's median wall seconds, median CPU seconds (user + system of the child) and the final loss the
run reports in its JSON, then the ratios. Runs on the CPU whatever the machine has (--device cpu).

    git worktree add /tmp/convscope-base HEAD~3      # the code to compare against
    python bench/demo_cpu.py --base /tmp/convscope-base --repeats 5
    python bench/demo_cpu.py --repeats 3 -- --iterations 60 --size 192   # this checkout alone, other settings
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from common import finish  # noqa: E402


def run_demo(checkout: Path, extra: list[str], out_dir: Path) -> dict:
    """One demo run of `checkout`: wall and CPU seconds, the losses from its JSON."""
    out = out_dir / "demo.png"
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "convscope", "demo", "-o", str(out), "-q", "--device", "cpu",
                           *extra], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"demo failed in {checkout}: {done.stderr.strip().splitlines()[-1:]}")
    meta = json.loads(out.with_suffix(".json").read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "engine_s": meta.get("seconds"), "loss": meta["final_losses"]["loss"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", type=Path, default=None, help="another checkout to compare against (its src/)")
    p.add_argument("--repeats", type=int, default=3, help="runs per side (default 3)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    p.add_argument("extra", nargs="*", help="after --: more `convscope demo` options for both sides")
    args = p.parse_args()
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.base is not None and not (args.base / "src" / "convscope").is_dir():
        p.error(f"--base {args.base} is not a convscope checkout (no src/convscope)")
    if os.getloadavg()[0] > 0.5:
        print(f"warning: load average {os.getloadavg()[0]:.1f}: other work skews wall times", file=sys.stderr)
    sides = {"this": REPO} if args.base is None else {"base": args.base.resolve(), "this": REPO}
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            order = list(sides) if r % 2 == 0 else list(sides)[::-1]
            for name in order:
                row = run_demo(sides[name], args.extra, Path(tmp))
                runs[name].append(row)
                print(f"  {name:4} run {r + 1}: wall {row['wall']:6.2f} s  cpu {row['cpu']:6.2f} s  "
                      f"engine {row['engine_s']:6.2f} s  loss {row['loss']:.5f}", flush=True)
    rows = []
    print(f"\n{'side':6} {'wall s':>8} {'cpu s':>8} {'engine s':>9} {'loss (min..max)':>22}")
    for name, rs in runs.items():
        row = {"side": name, "checkout": str(sides[name]),
               **{k: statistics.median(x[k] for x in rs) for k in ("wall", "cpu", "engine_s")},
               "loss_min": min(x["loss"] for x in rs), "loss_max": max(x["loss"] for x in rs)}
        rows.append(row)
        print(f"{name:6} {row['wall']:8.2f} {row['cpu']:8.2f} {row['engine_s']:9.2f} "
              f"{row['loss_min']:10.5f}..{row['loss_max']:.5f}")
    if len(rows) == 2:
        base, this = rows
        print(f"\nbase / this: wall {base['wall'] / this['wall']:.2f}x, cpu {base['cpu'] / this['cpu']:.2f}x, "
              f"engine {base['engine_s'] / this['engine_s']:.2f}x")
    finish(rows, args.json)


if __name__ == "__main__":
    main()

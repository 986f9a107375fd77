"""What a bigger feed-forward style network costs on the CPU: the network alone (the half-resolution
form FastStylizer runs there, its dtype rules) for several widths and residual-block counts, at the
sizes of bench/fast.py (512x384 and 1024x768 by default). Random weights: the speed does not depend on
them. Rows are timed in turn, round after round, so a change of machine load hits every row alike.

    python bench/ff_widths.py --threads 2 --repeats 5
    python bench/ff_widths.py --arch 16,32,48x5 32,64,128x5 --sizes 512
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from common import finish  # noqa: E402
from convscope.fast.apply import _dtype  # noqa: E402
from convscope.fast.nets import HalfResTransformerNet, TransformerNet  # noqa: E402

DEFAULT_ARCHS = ["16,32,48x5", "16,32,48x8", "16,32,64x5", "24,48,64x5", "32,48,64x5", "32,64,96x5",
                 "32,64,128x5"]


def parse_arch(text: str) -> tuple[tuple[int, int, int], int]:
    """"16,32,48x5" -> ((16, 32, 48), 5): the three stage widths, then the residual blocks."""
    try:
        widths, blocks = text.split("x")
        w = tuple(int(v) for v in widths.split(","))
        if len(w) != 3 or min(w) < 1 or int(blocks) < 1:
            raise ValueError
        return w, int(blocks)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTH,WIDTH,WIDTHxBLOCKS (e.g. 16,32,48x5)") from None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=parse_arch, nargs="+", default=[parse_arch(a) for a in DEFAULT_ARCHS],
                   help=f"networks as WIDTHSxRESIDUAL_BLOCKS (default: {' '.join(DEFAULT_ARCHS)})")
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="long sides (4:3 images), px")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds after one warm-up round (min and median)")
    p.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    a = p.parse_args(argv)
    if a.repeats < 1 or a.threads < 1 or any(s < 32 or s > 4096 for s in a.sizes):
        p.error("--repeats and --threads must be at least 1, --sizes 32 to 4096")
    torch.set_num_threads(a.threads)
    dtype = _dtype(torch.device("cpu"), "auto")
    nets = {arch: HalfResTransformerNet(TransformerNet(*arch).eval()).eval().to(dtype) for arch in a.arch}
    inputs = {s: torch.rand(1, 3, s * 3 // 4, s, dtype=dtype) for s in a.sizes}
    times: dict[tuple, list[float]] = {(arch, s): [] for arch in a.arch for s in a.sizes}
    with torch.inference_mode():
        for round_ in range(a.repeats + 1):
            for (arch, s), row in times.items():
                t0 = time.perf_counter()
                nets[arch](inputs[s])
                if round_:  # the first round warms up
                    row.append(time.perf_counter() - t0)
    base = a.arch[0]
    print(f"\n### Feed-forward network alone on the CPU ({a.threads} threads, {str(dtype).split('.')[-1]}, "
          f"half-resolution form): seconds per image, min (median) of {a.repeats}\n")
    print("| widths | residual blocks | " + " | ".join(f"{s}x{s * 3 // 4}" for s in a.sizes) + " |")
    print("|---|---:|" + "---:|" * len(a.sizes))
    rows = []
    for arch in a.arch:
        cells = []
        for s in a.sizes:
            t = times[(arch, s)]
            ratio = min(t) / min(times[(base, s)])
            cells.append(f"{min(t):.3f} ({statistics.median(t):.3f}), x{ratio:.2f}")
            rows.append({"widths": list(arch[0]), "residual_blocks": arch[1], "size": s, "min_s": min(t),
                         "median_s": statistics.median(t), "vs_first": ratio})
        print(f"| {'-'.join(map(str, arch[0]))} | {arch[1]} | " + " | ".join(cells) + " |")
    print(f"\n- x: min time relative to the first row ({'-'.join(map(str, base[0]))}, {base[1]} blocks)")
    finish(rows, a.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The arbitrary-style content pass alone on the CPU: encoder + decoder at one size, as
ArbitraryStylizer runs them (channels-last, its dtype rules), for the VGG19 + decoder of `adain`
and an AdaIN-lite model of the given architecture (random weights: the speed does not depend on them).

    python bench/arbitrary_content_pass.py --size 512 --threads 2 --repeats 15
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from convscope.fast.apply import _dtype  # noqa: E402
from convscope.fast.nets import LITE_DECODER_WIDTHS, LITE_WIDTHS, Decoder, Encoder, LiteEncoder  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512, help="square side, px")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15, help="timed calls after 3 warm-ups (median and min)")
    p.add_argument("--encoder-widths", type=int, nargs=4, default=list(LITE_WIDTHS))
    p.add_argument("--widths", type=int, nargs=3, default=list(LITE_DECODER_WIDTHS), help="lite decoder widths")
    a = p.parse_args()
    if a.repeats < 1 or a.threads < 1 or not 32 <= a.size <= 4096:
        p.error("--repeats and --threads must be at least 1, --size 32 to 4096")
    torch.set_num_threads(a.threads)
    dtype, layout = _dtype(torch.device("cpu"), "auto"), torch.channels_last
    x = torch.rand(1, 3, a.size, a.size).to(dtype, memory_format=layout)
    passes = {"adain: VGG19 + decoder (128, 64, 32)": (Encoder(), Decoder((128, 64, 32))),
              f"adain-lite: LiteEncoder {tuple(a.encoder_widths)} + decoder {tuple(a.widths)}":
                  (LiteEncoder(tuple(a.encoder_widths)), Decoder(tuple(a.widths)))}
    times: dict[str, list[float]] = {k: [] for k in passes}
    with torch.inference_mode():
        nets = {k: (e.eval().to(dtype, memory_format=layout), d.eval().to(dtype, memory_format=layout))
                for k, (e, d) in passes.items()}
        for _ in range(3):
            for e, d in nets.values():
                d(e(x)["relu4_1"])
        for _ in range(a.repeats):  # interleaved, so a busy moment hits both
            for k, (e, d) in nets.items():
                t0 = time.perf_counter()
                d(e(x)["relu4_1"])
                times[k].append(time.perf_counter() - t0)
    print(f"content pass at {a.size}x{a.size}, {a.threads} threads, {str(dtype).removeprefix('torch.')}, "
          f"channels-last (median / min of {a.repeats}):")
    for k, v in times.items():
        print(f"  {k}: {statistics.median(v):.3f} s / {min(v):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

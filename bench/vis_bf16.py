"""What the bf16 changes of the see-inside engines buy on the CPU, in one process, alternating.

"old" runs with Backbone.cast_layers a no-op and nets.base.relu as F.relu: VGG's frozen weights
cast again by autocast on every pass and the float round-trip ReLU, which is what the code did
before (bit for bit: tests/test_vis_bf16.py); "new" runs as the code is. Each engine at its
default sizes with fewer steps (so a round takes minutes, not a quarter hour), bf16 (what `auto`
picks on a CPU with native bf16); the order alternates across repeats; medians and each side's
figure of merit are printed. In-process, so start-up and weight loading are left out.

    python bench/vis_bf16.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))  # this checkout's convscope, not an installed one
from common import finish  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data" / "nst-inputs"


def jobs(photo, painting) -> dict:
    from convscope.vis.configs import InvertConfig, TextureConfig
    from convscope.vis.configs_render import DreamConfig, FeatureVizConfig
    from convscope.vis.dream import dream
    from convscope.vis.featureviz import featureviz
    from convscope.vis.invert import invert
    from convscope.vis.texture import synthesize

    bf16 = {"device": "cpu", "precision": "bf16"}
    return {
        "texture (256x256, 12 iterations)": lambda: synthesize(painting, TextureConfig(
            iterations=12, warmup=4, **bf16)).final_loss,
        "invert (224 px, 20 iterations)": lambda: invert(photo, InvertConfig(iterations=20, **bf16))[0].error,
        "dream (512 px, 4 octaves x 2 steps)": lambda: dream(photo, DreamConfig(steps=2, **bf16)).objective,
        "featureviz (16 x 128 px, 8 steps)": lambda: sum(featureviz(FeatureVizConfig(steps=8, **bf16)).final),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--photo", type=Path, default=DATA / "tubingen.jpg")
    p.add_argument("--painting", type=Path, default=DATA / "starry_night.jpg")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    if a.repeats < 1:
        p.error("--repeats must be at least 1")
    from torch.nn import functional as F

    from convscope import images
    from convscope.nets import base

    photo, painting = images.load_image(a.photo), images.load_image(a.painting)
    real_cast, real_relu = base.Backbone.cast_layers, base.relu

    def use(side: str) -> None:
        base.Backbone.cast_layers = real_cast if side == "new" else (lambda self, dtype: self)
        base.relu = real_relu if side == "new" else (lambda x, inplace: F.relu(x, inplace=inplace))

    print(f"load average at the start: {os.getloadavg()[0]:.1f}")
    rows = []
    for name, job in jobs(photo, painting).items():
        times: dict[str, list[float]] = {"old": [], "new": []}
        merit: dict[str, float] = {}
        for r in range(a.repeats):
            for side in ("old", "new") if r % 2 == 0 else ("new", "old"):
                use(side)
                start = time.perf_counter()
                merit[side] = float(job())
                times[side].append(time.perf_counter() - start)
        use("new")
        old, new = statistics.median(times["old"]), statistics.median(times["new"])
        rows.append({"job": name, "old": old, "new": new, "runs": times, "merit": merit,
                     "load": os.getloadavg()[0]})
        print(f"{name:36s} old {old:7.2f} s  new {new:7.2f} s  old/new {old / new:.2f}x  "
              f"figure of merit old {merit['old']:.6g} new {merit['new']:.6g}  (load {os.getloadavg()[0]:.1f})",
              flush=True)
    finish(rows, a.json)


if __name__ == "__main__":
    main()

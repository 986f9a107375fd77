"""`classify train --class-weights balanced` against `none` on an imbalanced data set, side by side.

Synthetic images (so it runs anywhere, in about a minute on 2 CPU cores): three classes, each a faint
6 px square in its own colour channel over noise; the training set has --rare images of the last
class and --common of each other one, the validation set --val of each. The `simple` model trains
--epochs epochs per seed with each setting; the table gives each class's validation accuracy
(recall) and the mean per-class accuracy, per seed and on average.

    python bench/class_weights.py [--seeds 8] [--epochs 8] [--rare 8] [--common 100] [--json FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from common import finish  # noqa: E402
from convscope.classify.config import TrainConfig  # noqa: E402
from convscope.classify.data import DataSplits, ImageData  # noqa: E402
from convscope.classify.predict import evaluate, load_run  # noqa: E402
from convscope.classify.run import RunDir  # noqa: E402
from convscope.classify.train import train  # noqa: E402

CLASSES = ["red", "green", "blue"]


def faint_squares(counts: list[int], seed: int, size: int = 16, level: int = 90) -> ImageData:
    """counts[c] images of class c: noise in 0..59, and a 6 px square at `level` in channel c."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    images = torch.randint(0, 60, (len(labels), 3, size, size), generator=g, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        r, col = torch.randint(0, size - 6, (2,), generator=g).tolist()
        images[i, c, r:r + 6, col:col + 6] = level
    return ImageData(images, labels, list(CLASSES), None, [])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--rare", type=int, default=8, help="training images of the rare class")
    p.add_argument("--common", type=int, default=100, help="training images of each other class")
    p.add_argument("--val", type=int, default=30, help="validation images per class")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    splits = DataSplits(faint_squares([a.common, a.common, a.rare], 0), faint_squares([a.val] * 3, 1),
                        "synthetic", "test")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for weights in ("none", "balanced"):
            for seed in range(a.seeds):
                folder = Path(tmp) / f"{weights}-{seed}"
                config = TrainConfig(model="simple", epochs=a.epochs, batch_size=16, input_size=16, device="cpu",
                                     seed=seed, class_weights=weights)
                train(splits, config, RunDir(folder))
                ev = evaluate(load_run(folder), splits.val.images, splits.val.labels, "cpu")
                rows.append({"class_weights": weights, "seed": seed, **ev.per_class,
                             "mean_per_class": ev.balanced_accuracy})
    print(f"\n{a.common} / {a.common} / {a.rare} training images (red / green / blue), {a.val} per class to "
          f"validate, `simple`, {a.epochs} epochs, seeds 0-{a.seeds - 1}\n")
    print("| class weights | seed | red | green | blue (rare) | mean per class |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['class_weights']} | {r['seed']} | {r['red']:.3f} | {r['green']:.3f} | {r['blue']:.3f} "
              f"| {r['mean_per_class']:.3f} |")
    for weights in ("none", "balanced"):
        mine = [r for r in rows if r["class_weights"] == weights]
        mean = {k: sum(r[k] for r in mine) / len(mine) for k in (*CLASSES, "mean_per_class")}
        print(f"| **{weights}, mean** | | {mean['red']:.3f} | {mean['green']:.3f} | **{mean['blue']:.3f}** "
              f"| **{mean['mean_per_class']:.3f}** |")
    finish(rows, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

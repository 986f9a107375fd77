"""CIFAR-10 benchmark: accuracy on the 10,000 test images, wall time and epochs, per model recipe.

Runs `convscope classify train` end to end on the JPEG copy of CIFAR-10 in ../shared/data, then reads
the run's final test accuracy. By default each run is a subprocess (start-up, decoding and feature
caching included); the decoded images are cached once (not timed twice); bottleneck features are
computed inside every timed run, as a user would see them the first time.

    python bench/cifar10.py [--rows simple transfer:vgg19@32 ...] [--seeds N] [--device cuda] [--json FILE]

A row is MODEL[@INPUT_SIZE][+OPTION=VALUE...] (switches as =true or =false), e.g. `transfer:vgg19@64`, `vgg19-bn+epochs=30`, or
`airbench94` / `airbench96`: Keller Jordan's speed-run trainings from the `airbench` package
(`pip install airbench`; CUDA only), fed the same JPEG images (as the `train.pt` / `test.pt` its
CifarLoader reads) and timed as airbench times itself: after its one-step warm-up, from the
whitening initialization to the end of its test-time-augmented evaluation (mirror + translate).

With `--seeds N` every row runs N times (seeds 0..N-1) and reports the mean and standard deviation.
Two times per row: `wall s` (the whole command) and `train s` (the training loop with its per-epoch
validation: the sum of metrics.csv's epoch seconds; for airbench its own definition above), and the
ratio of `train s` to airbench94's. For time-to-accuracy next to airbench, use `--in-process`:
convscope then trains in this process after an untimed one-epoch warm-up of each row (CUDA context,
kernels), as airbench is measured, instead of in a fresh process whose first epoch pays those costs.
`--tta` adds each convscope run's accuracy with test-time augmentation: `shift` (the default when given
alone: mirror + 1 px translations, as `classify evaluate --tta shift`, the level airbench reports) or `flip`.

    python bench/cifar10.py --rows resnet-fast airbench94 airbench96 --seeds 5 --in-process --tta --device cuda

`--limit N` keeps the first N images of each class in each split: a check that the rows still run
(e.g. `--limit 110 --rows simple+epochs=1 airbench94`), not a benchmark. airbench trains in batches of
1024 and drops a last partial one, so its rows need N >= 103.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import math
import os
import shutil
import statistics
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
                "transfer:efficientnet_lite0@224", "vgg19-bn", "resnet-fast", "airbench94", "airbench96"]
AIRBENCH = ("airbench94", "airbench96")
REFERENCE = {"simple": "63.5% (reference, original pixels, 10 epochs)",
             "transfer:vgg19@32": "64% (reference)", "transfer:efficientnet_lite0@224": "aim 88%",
             "vgg19-bn": "93-94% (reference, original pixels); aim 92%",
             "resnet-fast": "aim: airbench94's accuracy in at most 1.5x its time",
             "airbench94": "94.01% in 3.83 s on an A100 (original pixels, with TTA)",
             "airbench96": "96.05% in 46.3 s on an A100 (original pixels, with TTA)"}


def unpack(cache: Path, data: Path = DATA) -> Path:
    """The JPEG copy unpacked under `cache`, once: a marker file is written after both splits, so an
    unpack cut short (a killed run, a full disk) is redone, not taken for the whole data set."""
    root = cache / "cifar10-jpeg"
    done = root / ".unpacked"
    if not done.is_file():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        for split in ("train", "test"):
            with tarfile.open(data / f"cifar10-jpeg-{split}.tar.xz") as tar:
                tar.extractall(root, filter="data")
        done.write_text("train and test unpacked\n")
    return root


AIRBENCH_MIN_PER_CLASS = 103  # 10 classes x 103 >= airbench's batch of 1024


def first_per_class(root: Path, per_class: int) -> Path:
    """A copy of root's {train,test}/<class>/ tree with the first `per_class` files of each class, beside
    root (for --limit). Copies keep their mtimes, so convscope's decoded-image cache stays valid."""
    sub = root.with_name(f"{root.name}-first{per_class}")
    for split in ("train", "test"):
        for folder in sorted(d for d in (root / split).iterdir() if d.is_dir()):
            dest = sub / split / folder.name
            dest.mkdir(parents=True, exist_ok=True)
            for f in sorted(folder.iterdir())[:per_class]:
                if not (dest / f.name).exists():
                    shutil.copy2(f, dest / f.name)
    return sub


def parse_row(row: str) -> tuple[str, list[str]]:
    model, *options = row.split("+")
    args = []
    if "@" in model:
        model, size = model.split("@")
        args += ["--input-size", size]
    for opt in options:
        key, value = opt.split("=", 1)
        flag = key.replace("_", "-")
        if value.lower() in ("true", "false"):  # switches: +alternate_flip=true -> --alternate-flip
            args.append(f"--{flag}" if value.lower() == "true" else f"--no-{flag}")
        else:
            args += [f"--{flag}", value]
    return model, args


def decode_size(model: str, extra: list[str]) -> int:
    """The side `classify train` decodes the 32 px images to (models from scratch: their input size;
    transfer models keep 32 px and upsample on the device), so the cache is warmed for the right key."""
    if model.startswith("transfer:") or "--input-size" not in extra:
        return 32
    return int(extra[extra.index("--input-size") + 1])


def cuda_device(device: str) -> bool:
    import torch

    return torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))


# ---- convscope rows ----------------------------------------------------------------------------
class Convscope:
    """Runs `convscope classify train|evaluate` as a subprocess or, with in_process, through cli.main."""

    def __init__(self, a, data: Path):
        self.a, self.data = a, data
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
        self.warmed: set[str] = set()

    def command(self, argv: list[str]) -> tuple[int, str, str]:
        if not self.a.in_process:
            done = subprocess.run([sys.executable, "-m", "convscope.cli", *argv], env=self.env, capture_output=True,
                                  text=True)
            return done.returncode, done.stdout, done.stderr
        from convscope.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        return code, out.getvalue(), err.getvalue()

    def train_argv(self, model: str, extra: list[str], seed: int, run: Path) -> list[str]:
        return ["classify", "train", "--data", str(self.data), "--model", model, "-o", str(run), "--device",
                self.a.device, "--cache-dir", str(self.a.cache / "cache"), "-q", "--seed", str(seed), *extra]

    def new_run(self) -> Path:
        run = Path(tempfile.mkdtemp(prefix="run_", dir=self.a.cache))
        run.rmdir()
        return run

    def warm_up(self, row: str, model: str, extra: list[str]) -> None:
        """In-process only: one untimed epoch, so the timed runs find CUDA and its kernels loaded.
        Transfer rows are not warmed (that would cache the bottleneck features the timed run computes)."""
        if not self.a.in_process or row in self.warmed or model.startswith("transfer:"):
            return
        self.warmed.add(row)
        run = self.new_run()
        self.command(self.train_argv(model, [*extra, "--epochs", "1"], 0, run))
        shutil.rmtree(run, ignore_errors=True)

    def run(self, row: str, seed: int, splits) -> dict | None:
        model, extra = parse_row(row)
        self.warm_up(row, model, extra)
        run = self.new_run()
        # Every run computes its bottleneck features itself (not the cache of an earlier seed or bench).
        shutil.rmtree(self.a.cache / "cache" / "features", ignore_errors=True)
        start = time.perf_counter()
        code, _, err = self.command(self.train_argv(model, extra, seed, run))
        seconds = time.perf_counter() - start
        if code != 0:
            print(f"{row} (seed {seed}): failed\n{err[-2000:]}", file=sys.stderr)
            return None
        lines = (run / "metrics.csv").read_text().splitlines()
        table = [dict(zip(lines[0].split(","), line.split(","))) for line in lines[1:]]
        result = {"seed": seed, "accuracy": float(table[-1]["val_acc"]), "seconds": seconds,
                  "train_seconds": sum(float(r["seconds"]) for r in table), "epochs": int(table[-1]["epoch"])}
        if self.a.tta != "none":  # untimed; on the test images decoded here (`classify evaluate` would decode them again)
            from convscope.classify.predict import evaluate, load_run
            from convscope.devices import resolve_device

            device = resolve_device(self.a.device)
            result["tta_accuracy"] = evaluate(load_run(run, device), splits.val.images, splits.val.labels, device,
                                              tta=self.a.tta).accuracy
        if not self.a.keep_runs:
            shutil.rmtree(run, ignore_errors=True)
        return result


# ---- airbench rows -----------------------------------------------------------------------------
def airbench_data(cache: Path, data: Path) -> Path:
    """cache/airbench/<data's name>/cifar10/{train,test}.pt from the JPEG copy: the dict airbench's
    CifarLoader loads (images uint8 [N, 32, 32, 3], labels int64 [N], classes). Returns the folder above
    cifar10/, to run airbench in (its training function opens the test set at the relative path cifar10/)."""
    import torch

    from convscope.classify.data import load_data

    # One folder per data tree, so a --limit run never leaves its small train.pt for a full run.
    root = cache / "airbench" / data.name
    folder = root / "cifar10"
    if not (folder / "train.pt").exists() or not (folder / "test.pt").exists():
        splits = load_data(str(data), size=32, cache_dir=str(cache / "cache" / "data"))
        folder.mkdir(parents=True, exist_ok=True)
        for name, part in (("train", splits.train), ("test", splits.val)):
            tmp = folder / f".{name}.pt.tmp"
            torch.save({"images": part.images.permute(0, 2, 3, 1).contiguous(), "labels": part.labels.long(),
                        "classes": list(part.classes)}, tmp)
            os.replace(tmp, folder / f"{name}.pt")
    return root


def airbench_runs(name: str, seeds: int, a, data: Path) -> list[dict] | None:
    if not cuda_device(a.device):
        print(f"{name}: skipped (airbench needs a CUDA device)", flush=True)
        return None
    import torch

    saved_benchmark = torch.backends.cudnn.benchmark  # airbench turns cuDNN autotuning on when imported
    try:
        airbench = importlib.import_module("airbench")
        lib = importlib.import_module(f"airbench.lib_{name}")
    except ImportError:
        print(f"{name}: skipped (pip install airbench)", flush=True)
        return None
    train_fn = getattr(lib, f"train{name[-2:]}")
    hyp = lib.hyp
    root = airbench_data(a.cache, data)
    here = os.getcwd()
    results = []
    try:
        torch.backends.cudnn.benchmark = True  # as airbench runs itself
        os.chdir(root)
        loader = airbench.CifarLoader("cifar10", train=True, batch_size=hyp["opt"]["batch_size"], aug=hyp["aug"],
                                      altflip=True)
        test = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
        with contextlib.redirect_stdout(io.StringIO()):
            train_fn(train_loader=loader, run=-1, verbose=True)  # airbench's warm-up: one step, then returns
        for seed in range(seeds):
            torch.manual_seed(seed)
            torch.cuda.synchronize()
            start = time.perf_counter()
            net = train_fn(train_loader=loader, run=seed, verbose=False)
            tta = airbench.evaluate(net, test, tta_level=hyp["net"]["tta_level"])
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            plain = airbench.evaluate(net, test, tta_level=0)
            results.append({"seed": seed, "accuracy": plain, "tta_accuracy": tta, "seconds": seconds,
                            "train_seconds": seconds, "epochs": hyp["opt"]["train_epochs"]})
            print(f"{name:36s} seed {seed}  {plain:.4f} (TTA {tta:.4f})  {seconds:7.2f} s", flush=True)
    finally:
        os.chdir(here)
        torch.backends.cudnn.benchmark = saved_benchmark
    return results


# ---- summary -----------------------------------------------------------------------------------
def summarize(row: str, runs: list[dict]) -> dict:
    def mean_std(key):
        values = [r[key] for r in runs if key in r and not math.isnan(r[key])]
        if not values:
            return math.nan, math.nan
        return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    acc, acc_std = mean_std("accuracy")
    tta, tta_std = mean_std("tta_accuracy")
    return {"row": row, "seeds": len(runs), "accuracy": acc, "accuracy_std": acc_std, "tta_accuracy": tta,
            "tta_accuracy_std": tta_std, "seconds": mean_std("seconds")[0],
            "train_seconds": mean_std("train_seconds")[0], "epochs": runs[-1]["epochs"],
            "reference": REFERENCE.get(row, ""), "runs": runs}


def percent(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "-"
    return f"{100 * mean:.2f}%" + (f" ± {100 * std:.2f}" if std else "")


def best(r: dict) -> float:
    """The row's accuracy as its system reports it at best (with TTA when measured)."""
    return max(v for v in (r["accuracy"], r["tta_accuracy"], -1.0) if not math.isnan(v))


def print_table(rows: list[dict], tta: str) -> None:
    ref = next((r for r in rows if r["row"] == "airbench94"), None)
    print("\n| model | seeds | test accuracy | with TTA | train s | wall s | train s / airbench94 | "
          "best acc. - airbench94 | epochs | reference |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        ratio = f"x{r['train_seconds'] / ref['train_seconds']:.2f}" if ref else "-"
        gap = f"{100 * (best(r) - best(ref)):+.2f} pt" if ref else "-"
        print(f"| {r['row']} | {r['seeds']} | {percent(r['accuracy'], r['accuracy_std'])} | "
              f"{percent(r['tta_accuracy'], r['tta_accuracy_std'])} | {r['train_seconds']:.1f} | {r['seconds']:.1f} | "
              f"{ratio} | {gap} | {r['epochs']} | {r['reference']} |")
    print(f"\nTTA: convscope {tta} (as classify evaluate --tta {tta}); airbench mirror + 1 px translations (its level 2). "
          "train s: convscope's loop with per-epoch validation; airbench's whitening init + training + TTA eval.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS)
    parser.add_argument("--seeds", type=int, default=1, help="runs per row (seeds 0..N-1): mean and std")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--in-process", action="store_true",
                        help="train convscope rows in this process after an untimed 1-epoch warm-up")
    parser.add_argument("--tta", nargs="?", const="shift", default="none", choices=("none", "flip", "shift"),
                        help="also evaluate convscope runs with test-time augmentation (alone: shift, airbench's level)")
    parser.add_argument("--keep-runs", action="store_true", help="keep the run folders (in --cache)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "convscope-bench")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--data", type=Path, default=DATA, help="folder of cifar10-jpeg-{train,test}.tar.xz")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="only the first N images of each class in each split: a quick check that the rows run, "
                             f"not a benchmark (airbench rows need N >= {AIRBENCH_MIN_PER_CLASS})")
    a = parser.parse_args()
    if a.seeds < 1:
        parser.error("--seeds must be at least 1")
    if a.limit is not None and a.limit < 1:
        parser.error("--limit must be at least 1")
    if a.limit is not None and a.limit < AIRBENCH_MIN_PER_CLASS and any(r in AIRBENCH for r in a.rows):
        parser.error(f"--limit {a.limit} leaves airbench no full batch of 1024 images; use --limit "
                     f"{AIRBENCH_MIN_PER_CLASS} or more, or drop the airbench rows")
    sys.path.insert(0, str(REPO / "src"))
    for split in ("train", "test"):
        if not (a.data / f"cifar10-jpeg-{split}.tar.xz").is_file() and not (a.cache / "cifar10-jpeg" / split).is_dir():
            parser.error(f"{a.data / f'cifar10-jpeg-{split}.tar.xz'} not found (pass --data)")
    data = unpack(a.cache, a.data)
    if a.limit is not None:
        data = first_per_class(data, a.limit)
    from convscope.classify.data import load_data

    convscope = Convscope(a, data)
    rows = []
    for row in a.rows:
        if row in AIRBENCH:
            runs = airbench_runs(row, a.seeds, a, data)
        else:
            model, extra = parse_row(row)
            # Warm the decoded-image cache outside the timing (a user decodes once, then trains many times).
            splits = load_data(str(data), size=decode_size(model, extra), cache_dir=str(a.cache / "cache" / "data"))
            runs = []
            for seed in range(a.seeds):
                result = convscope.run(row, seed, splits)
                if result is not None:
                    runs.append(result)
                    tta = f" (TTA {result['tta_accuracy']:.4f})" if "tta_accuracy" in result else ""
                    print(f"{row:36s} seed {seed}  {result['accuracy']:.4f}{tta}  {result['seconds']:7.1f} s wall  "
                          f"{result['train_seconds']:7.1f} s train  {result['epochs']:3d} epochs", flush=True)
        if runs:
            rows.append(summarize(row, runs))
    print_table(rows, a.tta)
    finish(rows, a.json)
    if a.limit is not None:
        print(f"\n--limit {a.limit}: {a.limit} images per class at most; a check that the rows run, not benchmark figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())

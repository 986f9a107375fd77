"""`convscope classify lr-find`: the learning-rate range test of a training recipe (classify.lrfind)."""

from __future__ import annotations

import json
import math
import sys

from ..classify.config import CACHE_DIR_HELP
from ..cli import add_config_options

# Options of `classify train` that the sweep has no use for: it trains no epochs, replaces the
# schedule and the rate, and writes no run.
NOT_FOR_THE_SWEEP = ("epochs", "lr", "schedule", "warmup", "ema", "early_stopping", "keep", "snapshots",
                     "snapshot_layer")


def register_lr_find(sub) -> None:
    from ..classify.config import TrainConfig

    f = sub.add_parser("lr-find", help="find a good learning rate for a recipe (the range test)",
                       description="Train --model on --data for --steps steps while the learning rate grows "
                       "from --start to --end, and suggest where the loss falls fastest (Smith's range test, "
                       "fastai's lr_find). Nothing is written but the figure (-o, with its JSON sidecar) and "
                       "the caches; pass the suggestion to classify train --lr.")
    f.add_argument("-o", "--output", default=None, metavar="LR.png", help="the loss-against-rate figure")
    f.add_argument("--start", type=float, default=1e-7, help="first learning rate (default: 1e-07)")
    f.add_argument("--end", type=float, default=10.0, help="last learning rate (default: 10)")
    f.add_argument("--steps", type=int, default=100, help="training steps of the sweep (default: 100)")
    f.add_argument("--json", action="store_true", help="print the result as JSON")
    f.add_argument("--cache-dir", default=None,
                   help=f"where decoded images and bottleneck features are cached ({CACHE_DIR_HELP})")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_config_options(f, TrainConfig, skip=NOT_FOR_THE_SWEEP)
    f.set_defaults(func=run_lr_find)


def run_lr_find(args) -> int:
    from ..classify.config import TrainConfig, check_command_options, check_sweep
    from ..errors import ConfigError
    from ..imagefiles import check_output_path

    out = check_output_path(args.output) if args.output else None
    if not args.json and out is None and args.quiet:
        raise ConfigError("nothing to show: drop -q, or give -o LR.png or --json")
    check_sweep(args.start, args.end, args.steps)
    config = TrainConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(args).items()
                            if k in TrainConfig.__dataclass_fields__}).resolved()
    check_command_options(config)
    from ..classify.lrfind import find_lr
    from ..classify.models import check_input_size, check_model_name
    from ._classify_train import _cache_dir, load_training_data

    check_model_name(config.model)
    check_input_size(config.model, config.input_size)
    cache = _cache_dir(args)
    splits = load_training_data(config, cache)
    bar = None if args.quiet or args.json else _bar(args.steps)
    try:
        from pathlib import Path

        result = find_lr(splits, config, start=args.start, end=args.end, steps=args.steps, callback=bar,
                         cache_dir=Path(cache) / "features", report=bar.features if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    recipe = config.lr
    if args.json:
        finite = lambda values: [v if math.isfinite(v) else None for v in values]  # noqa: E731 (JSON has no NaN)
        print(json.dumps({"suggested_lr": result.steepest, "lowest_loss_lr": result.minimum, "recipe_lr": recipe,
                          "diverged": result.diverged, "lrs": result.lrs, "losses": finite(result.losses),
                          "smoothed": finite(result.smoothed)}))
    else:
        print(f"suggested --lr {result.steepest:.2g} (where the loss fell fastest); the loss was lowest at "
              f"{result.minimum:.2g} (a tenth of that, {result.minimum / 10:.2g}, is the cautious choice); "
              f"{config.model}'s recipe uses {recipe:g}"
              + ("" if result.diverged else f"; the loss never blew up: --end above {args.end:g} may show more"))
    if out is not None:
        _figure(result, recipe, out)
    return 0


def _bar(steps: int):
    """A progress callback for the sweep's steps, with `.features(done, total)` for a frozen
    backbone's feature pass before it and `.close()`."""
    from tqdm import tqdm

    bars: dict = {}

    def features(done: int, total: int) -> None:  # (the training images' only: the sweep needs no others)
        if "features" not in bars:
            bars["features"] = tqdm(total=total, desc="bottleneck features", unit="img", file=sys.stderr)
        bars["features"].update(done - bars["features"].n)

    def callback(p) -> None:
        if "sweep" not in bars:
            if "features" in bars:
                bars.pop("features").close()
            bars["sweep"] = tqdm(total=steps, desc="learning-rate sweep", unit="step", file=sys.stderr)
        bar = bars["sweep"]
        bar.set_postfix(lr=f"{p.lr:.1e}", loss=f"{p.smoothed:.3f}")
        bar.update(p.step - bar.n)

    def close() -> None:
        for bar in bars.values():
            bar.close()

    callback.features, callback.close = features, close
    return callback


def _figure(result, recipe: float, out) -> None:
    from ..figures import render
    from ..images import save_image

    def draw(fig) -> None:
        ax = fig.subplots()
        ax.plot(result.lrs, result.losses, color="0.75", linewidth=0.8, label="loss")
        ax.plot(result.lrs, result.smoothed, color="tab:blue", label="smoothed")
        for lr, colour, text in ((result.steepest, "tab:red", "fastest fall"),
                                 (result.minimum, "tab:green", "lowest"), (recipe, "0.3", "recipe")):
            ax.axvline(lr, color=colour, linestyle="--", linewidth=1, label=f"{text}: {lr:.2g}")
        finite = [v for v in result.losses + result.smoothed if math.isfinite(v)]
        if finite:  # the blow-up at the end would flatten the rest
            ax.set_ylim(min(finite) * 0.9, min(max(finite), 2.5 * result.smoothed[0]) * 1.05)
        ax.set(xscale="log", xlabel="learning rate", ylabel="training loss",
               title=f"learning-rate range test: {result.config.model}")
        ax.legend(fontsize=8)

    used = {k: v for k, v in result.config.to_dict().items() if k not in NOT_FOR_THE_SWEEP}
    save_image(render(draw, (7, 4.5)), out, {"suggested_lr": result.steepest, "lowest_loss_lr": result.minimum,
                                             "recipe_lr": recipe, "config": used})

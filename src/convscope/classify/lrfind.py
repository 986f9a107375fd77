"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates", section 3.3; popularized as
fastai's lr_find): train the recipe's model for `steps` steps (100 by default) while the learning
rate grows exponentially from tiny to huge, and watch the loss. Where it falls fastest is a good peak rate;
where it blows up is too far. Nothing is written: the model is thrown away afterwards.

Same model, data, augmentation, optimizer, loss and arithmetic as `train` with this config (built by
setup.prepare); the schedule and warm-up are replaced by the sweep. The rate set is the one
`--lr` sets: with --finetune the backbone still trains at --backbone-lr times it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..argcheck import callback_or_none, config_of, path_or_none
from ..devices import keeps_caller_rng, resolve_device
from ..errors import ConfigError
from .config import TrainConfig, check_command_options, check_sweep, for_splits
from .data import DataSplits
from .setup import prepare
from .train import train_mode

SMOOTHING = 0.98      # during the sweep the loss is followed by an exponential moving average
DIVERGED = 4.0        # (bias-corrected); the sweep stops once it exceeds this many times its minimum
SKIP = 0.1            # the first 10% of the steps are too noisy to pick from
MIN_FALL = 0.05       # a sweep whose loss never fell 5% below its start shows no rate to suggest


@dataclass
class LRStep:
    """Progress: one per step of the sweep."""
    step: int
    steps: int
    lr: float
    loss: float
    smoothed: float


@dataclass
class LRFindResult:
    config: TrainConfig          # resolved (its lr: the suggestion is a replacement for it)
    lrs: list[float]             # the rate of each step taken
    losses: list[float]          # its training loss
    smoothed: list[float]        # the loss smoothed by a centred moving average (no lag: the moving
                                 # average that watches for a blow-up trails the loss by ~50 steps)
    steepest: float              # where the smoothed loss fell fastest (per decade of the rate): the suggestion
    minimum: float               # where it was lowest; a tenth of it is the usual cautious choice
    diverged: bool               # the sweep stopped early: the loss blew up


@keeps_caller_rng
@torch.enable_grad()  # a caller's torch.no_grad() left the steps without a graph (a RuntimeError)
def find_lr(splits: DataSplits, config: TrainConfig, *, start: float = 1e-7, end: float = 10.0, steps: int = 100,
            callback: Callable[[LRStep], None] | None = None, cache_dir: str | Path | None = None,
            report: Callable[[int, int], None] | None = None) -> LRFindResult:
    """Sweep the learning rate from `start` to `end` over `steps` training steps of `config`'s model
    on `splits` (on config.device, seeded by config.seed) and suggest a peak rate. `report(done,
    total)`: progress of a frozen backbone's feature pass, which comes first."""
    if not isinstance(splits, DataSplits):
        raise ConfigError(f"splits must be the DataSplits that load_data returns, not {type(splits).__name__}")
    check_command_options(config_of(config, TrainConfig))
    callback_or_none(callback, "LRStep")
    path_or_none(cache_dir, "cache_dir")
    check_sweep(start, end, steps)
    from . import distributed

    if distributed.from_env().active:
        raise ConfigError("the learning-rate finder runs in one process: start it without torchrun")
    config = for_splits(config.resolved(), splits)
    device = resolve_device(config.device)
    config = replace(config, device=str(device))
    setup = prepare(splits, config, device, cache_dir=Path(cache_dir).expanduser() if cache_dir else None,
                    report=report, validation=False)
    model, optimizer = setup.model, setup.optimizer
    train_mode(model)
    lrs, losses = [], []
    average, best, diverged, epoch = 0.0, math.inf, False, 0
    while len(lrs) < steps and not diverged:
        torch.manual_seed(config.seed * 100_003 + epoch)  # dropout: as the training's epoch would
        for x, y in setup.batches(config, epoch):
            i = len(lrs)
            lr = start * (end / start) ** (i / (steps - 1))
            for g in optimizer.param_groups:
                g["lr"] = lr * g["lr_scale"]
            with setup.autocast:
                loss = setup.criterion(setup.logits(x).float(), y)
            setup.step(loss)
            value = float(loss.detach())
            average = SMOOTHING * average + (1 - SMOOTHING) * value
            smooth = average / (1 - SMOOTHING ** (i + 1))
            lrs.append(lr)
            losses.append(value)
            if callback is not None:
                callback(LRStep(i + 1, steps, lr, value, smooth))
            best = min(best, smooth)
            if not math.isfinite(smooth) or smooth > DIVERGED * best:
                diverged = True
                break
            if len(lrs) == steps:
                break
        epoch += 1
    smoothed = centred(losses, max(2, steps // 25))
    steepest, minimum = suggest(lrs, smoothed)
    return LRFindResult(config, lrs, losses, smoothed, steepest, minimum, diverged)


def centred(values: list[float], half: int) -> list[float]:
    """Each value replaced by the mean of the finite ones within `half` places either side (nan where
    none is finite)."""
    out = []
    for i in range(len(values)):
        near = [v for v in values[max(0, i - half):i + half + 1] if math.isfinite(v)]
        out.append(sum(near) / len(near) if near else math.nan)
    return out


def suggest(lrs: list[float], smoothed: list[float]) -> tuple[float, float]:
    """(the rate where the smoothed loss fell fastest per decade, the rate where it was lowest),
    both from the steps after the first SKIP of them and before any non-finite loss. ConfigError
    when the sweep shows no such place: the loss blew up at once, or never fell."""
    usable = [i for i, v in enumerate(smoothed) if math.isfinite(v)]
    if len(usable) < 3:
        raise ConfigError(f"the loss blew up within {len(lrs)} step(s) of --start {lrs[0]:.2g}: nothing to pick "
                          "from; lower --start")
    first = smoothed[usable[0]]
    usable = usable[int(len(lrs) * SKIP):] if len(usable) > 10 else usable
    low = min(usable, key=lambda i: smoothed[i])
    if not smoothed[low] < (1 - MIN_FALL) * first:
        raise ConfigError(f"the loss did not fall between {lrs[0]:.2g} and {lrs[-1]:.2g} (from {first:.4g} to "
                          f"{smoothed[low]:.4g} at best): sweep higher rates (--end) or longer (--steps)")
    # Slope per decade between neighbours (central differences), up to the minimum: past it, a
    # steep fall can only be the loss recovering from a blow-up.
    window = [i for i in usable if i <= low]
    if len(window) < 3:
        return lrs[low], lrs[low]
    slopes = {i: (smoothed[i + 1] - smoothed[i - 1]) / (math.log10(lrs[i + 1]) - math.log10(lrs[i - 1]))
              for i in window[1:-1]}
    steep = min(slopes, key=slopes.get)
    return lrs[steep], lrs[low]

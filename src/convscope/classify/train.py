"""Training: one loop for every model, with checkpoints that make any run resumable.

Determinism, and why resume ends where an uninterrupted run would: each epoch reseeds everything
random in it from (seed, epoch): the loader's order and augmentation, dropout, the head's feature
batches. So a run restarted from the checkpoint of epoch k replays epoch k+1 exactly as the
first run did (on the CPU bit for bit; on a GPU up to the non-determinism of its kernels).

Transfer learning with a frozen backbone computes the "bottleneck" features of every image once,
caches them on disk keyed by backbone, layer, input size and the data themselves, and trains the
dense head on them, which takes seconds. With --finetune N the last N backbone blocks train too
(at backbone_lr x lr); their BatchNorm layers keep their ImageNet statistics (eval mode), the usual
advice for small data sets, while their scale and shift still learn.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..argcheck import callback_or_none, config_of, flag, path_or_none
from ..devices import keeps_caller_rng, resolve_device
from ..errors import ConfigError, NumericalError
from .config import RESUME_MAY_CHANGE, TrainConfig, check_command_options, check_resume_options, for_splits
from .data import DataSplits, ImageData
from .folders import run_outside_data
from .infer import predict_logits
from .models import TransferModel
from .optim import lr_factor
from .checkpoints import (load_optimizer, load_snapshots, load_state, repair_model_file, save_snapshots,
                          saved_state, write_checkpoint)
from .run import CHECKPOINT, CONFIG, RunDir, RunError, remove_stale_temps
from .setup import prepare


@dataclass
class EpochReport:
    """Progress: one per finished epoch (and per step with `step` set, for progress bars). Epoch 0
    is the bottleneck-feature pass of a frozen backbone, counted in images."""
    epoch: int
    epochs: int
    step: int = 0
    steps: int = 0
    train_loss: float = math.nan
    train_acc: float = math.nan
    val_loss: float = math.nan
    val_acc: float = math.nan
    lr: float = math.nan
    seconds: float = 0.0
    done: bool = False           # True for the end-of-epoch report


@dataclass
class TrainResult:
    config: TrainConfig          # resolved
    classes: list[str]
    history: list[dict] = field(default_factory=list)
    val_acc: float = math.nan
    epochs_run: int = 0
    stopped_early: bool = False
    best_epoch: int = 0          # the epoch with the highest validation accuracy (first of equals)
    best_val_acc: float = math.nan
    model_epoch: int = 0         # the epoch whose weights model.safetensors holds (config.keep)
    seconds: float = 0.0


# ---- model state -------------------------------------------------------------------------------
def train_mode(model: nn.Module) -> None:
    model.train()
    if isinstance(model, TransferModel):
        model.backbone.eval()  # frozen statistics; dropout-free anyway


# ---- the loop ----------------------------------------------------------------------------------
@contextlib.contextmanager
def cudnn_autotuning():
    """cuDNN's algorithm search on for the block (restored after): training runs the same few input
    shapes thousands of times, so the one-off search per shape pays for itself. On an H100 without it,
    resnet-fast's convolutions partly ran in cuDNN's generic fallback kernels."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


@keeps_caller_rng
def train(splits: DataSplits, config: TrainConfig, run: RunDir, *, resume: bool = False,
          callback: Callable[[EpochReport], None] | None = None, cache_dir: str | Path | None = None) -> TrainResult:
    """Train `config.model` on `splits`, writing every epoch's checkpoint and metrics to `run`.

    Under `torchrun` (WORLD_SIZE > 1) each process trains on its shard with DistributedDataParallel
    and only rank 0 writes (see classify/distributed.py)."""
    from . import distributed
    from ..runlock import RUN_LOCK, exclusive

    run = _check_args(splits, config, run, resume, callback, cache_dir)
    main = distributed.from_env().main
    made = main and not run.path.is_dir() and run.prepare()
    # One process writes a run folder at a time (under torchrun: rank 0, the one that writes).
    lock = exclusive(run.file(RUN_LOCK), f"the run folder {run.path}") if main else contextlib.nullcontext()
    with lock:  # (a BusyError here: the folder is another process's, and nothing below touches it)
        try:
            with cudnn_autotuning():
                return _train(splits, config, run, resume, callback,
                              None if cache_dir is None else Path(cache_dir).expanduser())
        except BaseException:
            if made:  # a folder this call made, and no epoch finished in it: leave nothing behind
                run.discard(made)  # (still holding the lock: no other process starts in it meanwhile)
            raise


def _check_args(splits, config, run, resume, callback, cache_dir) -> RunDir:
    """ConfigError (one line, naming the argument) for arguments of the wrong kind; `run` as a RunDir
    (a path is taken as one)."""
    if not isinstance(splits, DataSplits):
        raise ConfigError(f"splits must be the DataSplits that load_data returns (load_data('my_photos/', "
                          f"size=32)), not {type(splits).__name__}")
    config_of(config, TrainConfig)
    check_command_options(config)
    if isinstance(run, (str, os.PathLike)):
        run = RunDir(run)
    if not isinstance(run, RunDir):
        raise ConfigError(f"run must be a RunDir or the path of a run folder, not {type(run).__name__}")
    flag(resume, "resume")
    callback_or_none(callback, "EpochReport")
    path_or_none(cache_dir, "cache_dir")
    return run


def _check_run(run: RunDir, config: TrainConfig, resume: bool, classes: list[str]) -> None:
    """Before any work: without `resume` a folder that already holds a trained run is refused, never
    overwritten; with it, options other than the run's are (the CLI checks this before loading data;
    the API here, before the model is built or a feature pass runs)."""
    if not resume and run.file(CHECKPOINT).exists():
        raise RunError(f"{run.path} already holds a trained run; pass resume=True to continue it "
                       "or choose a new run folder")
    if resume and run.file(CONFIG).exists():
        check_resume_options(run.info().get("config", {}), config, str(run.path))
        run.check_resumable(classes, config.epochs)


def _start_run(run: RunDir, config: TrainConfig, splits: DataSplits, resume: bool, arithmetic: str) -> None:
    """Make `run` a run folder (config.json, so load_run and resume find the run) unless it is one.
    `arithmetic`: the training steps' precision as resolved (what --precision auto chose), recorded."""
    if not run.file(CONFIG).exists():
        run.create({"config": config.to_dict(), "classes": list(splits.train.classes),
                    "run": {**splits.record(), "arithmetic": arithmetic}}, resume=resume)
    else:  # (made by the CLI before its data loaded, or resumed: what check_resume_options lets a
        # resume change, the run's record says; not --snapshots, whose recorded layer a later resume
        # with snapshots must keep to)
        now = config.to_dict()
        options = {k: now[k] for k in RESUME_MAY_CHANGE if k in now and k != "snapshots"} if resume else {}
        run.record_resumed(options, {"arithmetic": arithmetic})


@torch.enable_grad()  # a caller's torch.no_grad() left the steps without a graph (a RuntimeError)
def _train(splits: DataSplits, config: TrainConfig, run: RunDir, resume: bool,
           callback: Callable[[EpochReport], None] | None, cache_dir: str | Path | None) -> TrainResult:
    from . import distributed

    world = distributed.from_env()
    config = for_splits(config.resolved(), splits)
    run_outside_data(run.path, config.data)  # (the CLI checks before loading; the API here)
    device = distributed.setup(world, resolve_device(config.device))
    config = replace(config, device=str(device))
    classes = splits.train.classes
    # Progress of a frozen backbone's one-off feature pass: reports with epoch 0 (steps = images).
    report = None if callback is None or not world.main else \
        (lambda done, total: callback(EpochReport(0, config.epochs, done, total)))
    shard = distributed.shard(world, len(splits.train)) if world.active else None
    if world.main:
        _check_run(run, config, resume, classes)
    setup = prepare(splits, config, device, shard=shard, cache_dir=Path(cache_dir) if cache_dir else None,
                    report=report, init=not resume)
    model, optimizer, cached, autocast = setup.model, setup.optimizer, setup.cached, setup.autocast
    if world.main:
        _start_run(run, config, splits, resume, setup.precision)
    steps_per_epoch = setup.steps_per_epoch
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = round(config.warmup * steps_per_epoch)
    ema = ({k: v.detach().clone() for k, v in saved_state(model, config).items() if v.is_floating_point()}
           if config.ema else None)

    history: list[dict] = []
    best_acc, best_loss, best_epoch, start_epoch = -1.0, math.inf, 0, 0
    if resume:
        if world.main:
            remove_stale_temps(run.path)  # writes a kill cut short (the run folder is the run's own)
        state = run.load_checkpoint()
        if state is not None:
            model_state, rest, meta = state
            load_state(model, model_state, str(run.file("checkpoint.safetensors")))
            load_optimizer(optimizer, rest, meta)
            if ema is not None:
                ema = {k[4:]: v.to(device) for k, v in rest.items() if k.startswith("ema.")} or ema
            history, best_acc, best_epoch = meta["history"], meta["best_acc"], meta["best_epoch"]
            best_loss = meta.get("best_loss", history[best_epoch - 1]["val_loss"] if best_epoch else math.inf)
            start_epoch = meta["epoch"]
            if world.main:
                repair_model_file(run, model, ema, config, meta)
    if config.snapshots and cached:
        raise ConfigError("--snapshots follows the convolutions as they learn; with a frozen backbone only "
                          "the dense head trains (add --finetune N)")
    snaps = load_snapshots(run) if (config.snapshots and resume) else []
    snaps = [s for s in snaps if s.epoch <= start_epoch]
    fixed = splits.val.images[:1].to(device).float().div_(255) if config.snapshots else None
    if fixed is not None:
        from .snapshots import check_layer
        check_layer(model, config.snapshot_layer, config.input_size, config.model)  # not after an epoch
    criterion = setup.criterion
    forward = model
    if world.active and not cached:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    result = TrainResult(config, classes, history)
    # The averaged tensors and the live ones they follow (the same storage all run long).
    live = model.state_dict(keep_vars=True)
    ema_pairs = ([ema[k] for k in ema if k in live], [live[k].detach() for k in ema if k in live]) if ema else None
    clock = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        if config.early_stopping and epoch - best_epoch >= config.early_stopping and best_acc >= 0:
            result.stopped_early = True
            break
        torch.manual_seed(config.seed * 100_003 + epoch)  # dropout etc.: the same in a resumed run
        train_mode(model)
        epoch_start = time.perf_counter()
        seen, loss_sum, correct_sum = 0, torch.zeros((), device=device), torch.zeros((), device=device)
        for i, (x, y) in enumerate(setup.batches(config, epoch)):
            step = epoch * steps_per_epoch + i
            factor = lr_factor(step, total_steps, warmup_steps, config.schedule)
            for g in optimizer.param_groups:
                g["lr"] = config.lr * factor * g["lr_scale"]
            with autocast:
                logits = setup.logits(x, forward)
                loss = criterion(logits.float(), y)
            setup.step(loss)
            if ema_pairs:
                with torch.no_grad():
                    torch._foreach_lerp_(ema_pairs[0], ema_pairs[1], 1 - config.ema)
            loss_sum += loss.detach() * y.shape[0]
            correct_sum += (logits.detach().argmax(1) == y).sum()
            seen += y.shape[0]
            if callback is not None and world.main:
                callback(EpochReport(epoch + 1, config.epochs, i + 1, steps_per_epoch, lr=config.lr * factor))
        if world.active and not cached:
            loss_sum, correct_sum, seen_t = distributed.all_sum(world, loss_sum, correct_sum,
                                                                torch.tensor(float(seen), device=device))
            seen = int(seen_t.item())
        train_loss = float(loss_sum) / max(seen, 1)
        if not math.isfinite(train_loss):
            raise NumericalError(f"the training loss became {train_loss} in epoch {epoch + 1}; "
                                 "lower --lr or use --precision fp32")
        val_loss, val_acc = _validate(model, ema, cached, setup.val_x, splits.val, device, setup.channels_last,
                                      autocast)
        if not math.isfinite(val_loss):  # (a finite training loss can hide it: BatchNorm's running statistics)
            raise NumericalError(f"the validation loss became {val_loss} in epoch {epoch + 1}; "
                                 "lower --lr or use --precision fp32")
        row = {"epoch": epoch + 1, "train_loss": round(train_loss, 6), "train_acc": round(float(correct_sum) / max(seen, 1), 6),
               "val_loss": round(val_loss, 6), "val_acc": round(val_acc, 6), "lr": config.lr * factor,
               "seconds": round(time.perf_counter() - epoch_start, 3)}
        history.append(row)
        # Better: a higher validation accuracy, or the same with a lower validation loss (small
        # validation sets tie often; the first of equal epochs is not the one to keep).
        improved = val_acc > best_acc or (val_acc == best_acc and val_loss < best_loss)
        if improved:
            best_acc, best_loss, best_epoch = val_acc, val_loss, epoch + 1
        if world.main:
            if fixed is not None:
                from .snapshots import capture
                snaps.append(capture(model, fixed, config.snapshot_layer, epoch + 1, config.input_size))
                save_snapshots(run, snaps, splits.val.images[0])
            write_checkpoint(run, model, ema, optimizer, config, classes, history, (best_acc, best_loss, best_epoch),
                             epoch + 1, model_file=improved or config.keep == "last" or not best_epoch)
        distributed.barrier(world)
        if callback is not None and world.main:
            callback(EpochReport(epoch + 1, config.epochs, steps_per_epoch, steps_per_epoch, row["train_loss"],
                                 row["train_acc"], val_loss, val_acc, row["lr"], row["seconds"], done=True))
    result.history, result.epochs_run = history, len(history)
    result.val_acc = history[-1]["val_acc"] if history else math.nan
    if history:
        result.best_epoch = best_epoch
        result.best_val_acc = history[best_epoch - 1]["val_acc"] if best_epoch else math.nan  # (as recorded)
        result.model_epoch = best_epoch if config.keep == "best" and best_epoch else history[-1]["epoch"]
    result.seconds = time.perf_counter() - clock
    return result


def _validate(model, ema, cached, val_x, val: ImageData, device, channels_last, autocast) -> tuple[float, float]:
    live = None
    if ema is not None:  # evaluate the averaged weights
        live = {k: v.detach().clone() for k, v in model.state_dict().items() if k in ema}
        model.load_state_dict(ema, strict=False)
    try:
        model.eval()
        with torch.no_grad(), autocast:
            if cached:
                logits = torch.cat([model.head(val_x[s:s + 1024].to(device)).float().cpu()
                                    for s in range(0, len(val_x), 1024)])
            else:
                logits = predict_logits(model, val.images, device, channels_last=channels_last)
    finally:
        if live is not None:
            model.load_state_dict(live, strict=False)
    loss = F.cross_entropy(logits, val.labels).item()
    acc = (logits.argmax(1) == val.labels).float().mean().item()
    return loss, acc

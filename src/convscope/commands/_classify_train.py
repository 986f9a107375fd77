"""`convscope classify train`: its run, progress bar and report (the parser is in classify.py)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path


def _cache_dir(args) -> str:
    from ..classify.config import default_cache_dir

    return args.cache_dir or str(default_cache_dir())


def run_train(args) -> int:
    from ..classify.config import TrainConfig, check_command_options, check_resume_options

    config = TrainConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(args).items()
                            if k in TrainConfig.__dataclass_fields__}).resolved()
    from ..classify import distributed
    from ..classify.models import check_input_size, check_model_name
    from ..devices import resolve_device

    from ..classify.folders import run_outside_data
    from ..classify.run import RunDir, RunError

    check_model_name(config.model)     # cheap checks before any data is read
    check_command_options(config)
    check_input_size(config.model, config.input_size)
    run = RunDir(args.output)          # (and before the processes of a torchrun meet, so all see the same)
    run_outside_data(run.path, config.data)
    made = None
    if args.resume:
        info = run.info()
        if info.get("config", {}).get("model") != config.model:
            raise RunError(f"{run.path} trained model {info.get('config', {}).get('model')!r}, not {config.model!r}")
        _check_resume_data(run, info, config)
        check_resume_options(info.get("config", {}), config, str(run.path))
        from ..classify.folders import folder_classes

        run.check_resumable(folder_classes(config.data), config.epochs)  # (folder names: before decoding)
    else:
        made = run.prepare()  # the one-line "not empty" / "cannot create" errors before any loading
    world = distributed.from_env()     # under torchrun: one process per GPU (or CPU process)
    from ..runlock import RUN_LOCK, exclusive

    # Before anything is written: a second process on the same folder is refused and touches nothing.
    lock = exclusive(run.file(RUN_LOCK), f"the run folder {run.path}") if world.main else contextlib.nullcontext()
    with lock:
        try:
            distributed.setup(world, resolve_device(config.device))
            return _train(args, config, world)
        except KeyboardInterrupt:
            if world.main:  # Ctrl-C: say what is kept, and how to go on
                _report_interrupt(run, made)
            raise
        except Exception:
            # A new run that failed before its first checkpoint (a bad option found late, unreadable
            # data) leaves no half-made run folder behind, which would block running it again.
            if made is not None and world.main:
                run.discard(made)
            raise
        finally:
            distributed.teardown(world)


def _report_interrupt(run, made) -> None:
    from ..classify.curves import read_metrics
    from ..classify.run import CHECKPOINT

    if run.file(CHECKPOINT).exists():
        done = len(read_metrics(run))
        print(f"\ninterrupted: {run.path} keeps the {done} finished epoch(s) (model.safetensors, metrics.csv); "
              "the same command with --resume continues it", file=sys.stderr)
    elif made is not None:  # a new run without a finished epoch: nothing worth a folder
        run.discard(made)
        print("\ninterrupted before the first epoch finished: nothing kept", file=sys.stderr)
    else:
        print(f"\ninterrupted before the first epoch finished; the same command with --resume starts {run.path} "
              "again", file=sys.stderr)


def _check_resume_data(run, info: dict, config) -> None:
    """RunError (one line) when --resume is given other data than the run was trained on."""
    from ..classify.folders import same_folder
    from ..classify.run import RunError

    recorded = info.get("run", {}).get("data") or info.get("config", {}).get("data")
    # A recorded folder that is gone (data moved, run copied to another machine) cannot be compared.
    moved = recorded != "cifar10" and config.data != "cifar10" and not Path(str(recorded)).expanduser().is_dir()
    if isinstance(recorded, str) and not moved and not (
            config.data == recorded if "cifar10" in (config.data, recorded) else same_folder(config.data, recorded)):
        raise RunError(f"{run.path} was trained on --data {recorded}, not {config.data}; resume it with its own data")


def load_training_data(config, cache: str):
    """The splits `config` trains on, decoded (and cached under `cache`) as training reads them;
    warnings and skipped images said on stderr."""
    import warnings

    from ..classify.data import load_data
    from ..classify.folders import decode_size

    folder = config.data != "cifar10"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_data(config.data, root=config.data_root,
                           size=decode_size(config.data, config.input_size, config.model) if folder else None,
                           val_split=config.val_split, seed=config.seed, cache_dir=str(Path(cache) / "data"))
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    skipped = splits.train.skipped + splits.val.skipped
    if skipped:
        print(f"warning: skipped {len(skipped)} unreadable image(s), e.g. {skipped[0]}", file=sys.stderr)
    return splits


def _train(args, config, world) -> int:
    from ..classify import distributed
    from ..classify.run import RunDir
    from ..classify.train import train
    from ..runinfo import run_metadata

    run = RunDir(args.output)
    cache = _cache_dir(args)
    splits = load_training_data(config, cache)
    skipped = splits.train.skipped + splits.val.skipped
    meta = run_metadata("classify train", config.to_dict(), **splits.record(), skipped=len(skipped))
    info = {"config": config.to_dict(), "classes": splits.train.classes, "run": meta}
    if world.main and (not args.resume or not run.file("config.json").exists()):
        run.create(info, resume=args.resume)
    distributed.barrier(world)
    from ..classify.curves import EpochOutputs

    callback = None if not world.main else EpochOutputs(run, None if args.quiet else _bar())
    result = train(splits, config, run, resume=args.resume, callback=callback,
                   cache_dir=Path(cache) / "features")
    if not world.main:
        return 0
    callback.finish(result.history)
    last = result.history[-1] if result.history else {}
    stop = " (stopped early)" if result.stopped_early else ""
    print(f"{config.model}: validation accuracy {last.get('val_acc', float('nan')):.4f} after "
          f"{result.epochs_run} epoch(s){stop}, {result.seconds:.1f} s{_best_note(result, config, splits)}; "
          f"run saved in {run.path}", file=sys.stderr)
    return 0


def _best_note(result, config, splits) -> str:
    """Which epoch model.safetensors holds with --keep best; with --keep last, the epoch with a higher
    validation accuracy than the last, if any (and, where the validation data is a hold-out, not
    the test set, that --keep best in a new run would keep it)."""
    if not result.history or not result.best_epoch:
        return ""
    if config.keep == "best":
        return (f"; model.safetensors holds epoch {result.model_epoch} "
                f"(the best, validation accuracy {result.best_val_acc:.4f})")
    if result.best_val_acc > result.history[-1]["val_acc"]:
        hint = " (--keep best in a new run keeps the best epoch)" if splits.val_kind.startswith("split:") else ""
        return f"; the best was epoch {result.best_epoch} ({result.best_val_acc:.4f}){hint}"
    return ""


def _bar():
    from tqdm import tqdm

    state = {"bar": None}

    def callback(r) -> None:
        new_pass = state["bar"] is None or state["bar"].total != r.steps or r.step < state["bar"].n
        if new_pass or (r.step == 1 and not r.done):
            if state["bar"] is not None:
                state["bar"].close()
            desc = "bottleneck features" if r.epoch == 0 else f"epoch {r.epoch}/{r.epochs}"
            state["bar"] = tqdm(total=r.steps, desc=desc, unit="img" if r.epoch == 0 else "step",
                                file=sys.stderr, leave=True)
        bar = state["bar"]
        if r.done:
            bar.set_postfix(loss=f"{r.train_loss:.3f}", acc=f"{r.train_acc:.3f}", val_acc=f"{r.val_acc:.3f}")
            bar.close()
            state["bar"] = None
        else:
            bar.update(r.step - bar.n)

    return callback

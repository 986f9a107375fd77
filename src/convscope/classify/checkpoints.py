"""What a training run writes each epoch and reads back to resume: the weights users get (the
model file), the checkpoint (live weights, EMA, optimizer state, history, the best epoch), and the
feature-evolution snapshots. See run.py for the files and how they are written safely."""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn

from .config import TrainConfig
from .models import TransferModel
from .run import RunDir, RunError, load_tensors, save_tensors


def saved_state(model: nn.Module, config: TrainConfig) -> dict[str, torch.Tensor]:
    """The weights a run keeps: a frozen pretrained backbone is rebuilt from its package, not saved."""
    state = model.state_dict()
    if isinstance(model, TransferModel) and not config.finetune:
        state = {k: v for k, v in state.items() if not k.startswith("backbone.")}
    return state


def load_state(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    strict = not (isinstance(model, TransferModel) and not any(k.startswith("backbone.") for k in state))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise RunError(f"{where} holds weights of another model: {str(e).splitlines()[1].strip()}") from None
    if unexpected or (strict and missing) or any(not k.startswith("backbone.") for k in missing):
        what = unexpected or missing
        raise RunError(f"{where} holds weights of another model ({len(what)} mismatched, e.g. {what[0]})")


def model_weights(model, ema, config) -> dict[str, torch.Tensor]:
    """What the model file holds: the weights, averaged where there is an EMA of them."""
    live = saved_state(model, config)
    return live if ema is None else {k: (ema[k] if k in ema else v) for k, v in live.items()}


def repair_model_file(run: RunDir, model, ema, config, meta: dict) -> None:
    """A kill between an epoch's checkpoint and its model file (RunDir.save) left the model file an
    epoch behind: the checkpoint just loaded holds the weights it should, so write it from them."""
    epoch = meta["epoch"]
    due = meta["best_epoch"] if config.keep == "best" and meta["best_epoch"] else epoch
    if due == epoch and run.model_epoch() != epoch:
        run.save_model(model_weights(model, ema, config), epoch, meta["history"][-1]["val_acc"])


def write_checkpoint(run: RunDir, model, ema, optimizer, config, classes, history, best: tuple, epoch,
                     model_file: bool = True) -> None:
    """Everything resume needs; and the model file unless `model_file` is False (keep="best" and
    this epoch is not the best: the file keeps the best epoch's weights). `best`: the best epoch's
    (accuracy, loss, epoch) so far."""
    live = saved_state(model, config)
    weights = model_weights(model, ema, config) if model_file else None
    rest: dict[str, torch.Tensor] = {}
    if ema is not None:  # the averaged weights are the model users get; resume needs both
        rest.update({f"ema.{k}": v for k, v in ema.items()})
    opt = optimizer.state_dict()
    scalars: dict[str, dict] = {}
    for idx, state in opt["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                rest[f"optim.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": g["params"]} for g in opt["param_groups"]]
    meta = {"epoch": epoch, "history": history, "best_acc": best[0], "best_loss": best[1], "best_epoch": best[2],
            "optim_groups": groups, "optim_scalars": scalars, "config": config.to_dict(), "classes": classes}
    run.save(weights, live, rest, meta)
    run.write_metrics(history)


def save_snapshots(run: RunDir, snaps, image_u8: torch.Tensor) -> None:
    from ..images import save_image
    from .snapshots import evolution_figure

    tensors = {}
    for s in snaps:
        tensors[f"{s.epoch}.filters"] = s.filters
        tensors[f"{s.epoch}.activations"] = s.activations
    save_tensors(run.file("snapshots.safetensors"), tensors, {"layer": snaps[-1].layer,
                                                              "epochs": [s.epoch for s in snaps]})
    image = Image.fromarray(image_u8.permute(1, 2, 0).numpy())
    save_image(evolution_figure(snaps, image), run.file("feature_evolution.png"), None)


def load_snapshots(run: RunDir):
    from .snapshots import Snapshot

    path = run.file("snapshots.safetensors")
    if not path.exists():
        return []
    tensors, meta = load_tensors(path)
    return [Snapshot(e, tensors[f"{e}.filters"], tensors[f"{e}.activations"], meta["layer"]) for e in meta["epochs"]]


def load_optimizer(optimizer: torch.optim.Optimizer, rest: dict, meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in rest.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, values in meta.get("optim_scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["optim_groups"]})
    except (ValueError, KeyError) as e:
        raise RunError(f"the checkpoint's optimizer state does not fit this model ({e})") from None

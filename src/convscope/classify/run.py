"""A run directory: what a training run leaves behind, written so a kill at any moment loses nothing.

    RUN_DIR/config.json              resolved TrainConfig, classes, model and data facts, versions
    RUN_DIR/model.safetensors        the weights evaluate/predict/export use: the last epoch's, or with
                                     keep="best" the best validation epoch's (epoch, val_acc in the header)
    RUN_DIR/checkpoint.safetensors   everything resume needs: weights, EMA, optimizer state, epoch, history
    RUN_DIR/metrics.csv              one row per epoch
    RUN_DIR/tensorboard/             the same scalars as TensorBoard event files
    RUN_DIR/curves.png               loss and accuracy per epoch

Every file is written to a temporary name, flushed to disk and renamed over the old one, so a reader
sees either the previous complete file or the new one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..runlock import RUN_LOCK

if TYPE_CHECKING:  # annotations only: a run folder is checked without torch, before the CLI loads it
    import torch

CONFIG, MODEL, CHECKPOINT, METRICS = "config.json", "model.safetensors", "checkpoint.safetensors", "metrics.csv"
KIND = "convscope-classifier"


class RunError(UserError):
    """Not a run directory, or a run that does not fit (another model, a damaged checkpoint)."""


def atomic_write(path: Path, data: bytes) -> Path:
    """`data` to `path` through a temp file, fsync and rename (images.write_atomic)."""
    from ..images import write_atomic

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create the folder {path.parent} ({e.strerror or e}); choose another folder") from None
    write_atomic(path, lambda f: f.write(data))
    return path


# images.write_atomic's temp files: ".NAME.<12 hex digits>.tmp" beside NAME.
_TEMP = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{12}\.tmp")


def remove_stale_temps(folder: Path, names: set[str] | None = None) -> list[Path]:
    """Delete the temp files a write left in `folder` when its process was killed mid-write (for the
    targets `names`, or any); the paths removed. Resuming a run clears its own litter this way."""
    removed = []
    for path in Path(folder).glob(".*.tmp"):
        m = _TEMP.fullmatch(path.name)
        if m and (names is None or m["name"] in names) and path.is_file():
            try:
                path.unlink()
            except OSError:
                continue
            removed.append(path)
    return removed


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    from safetensors.torch import save

    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, save(flat, metadata={"convscope": json.dumps(meta)}))


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open
    from safetensors.torch import load

    try:
        data = Path(path).read_bytes()
        tensors = load(data)
        with safe_open(str(path), "pt") as f:  # header metadata
            header = f.metadata() or {}
        return tensors, json.loads(header.get("convscope", "{}"))
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except Exception as e:
        raise RunError(f"{path} is damaged or not a safetensors file ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''})") from None


class RunDir:
    """A classifier run folder (`path`: a str or PathLike, `~` expanded; a RunDir is taken as it is):
    what `train` writes its config, checkpoints, model and metrics into, and `load_run` opens.
    Nothing is created until training starts."""

    def __init__(self, path: str | Path):
        if isinstance(path, RunDir):
            path = path.path
        if not isinstance(path, (str, os.PathLike)):
            raise RunError(f"a run folder must be given as a path, not {type(path).__name__}")
        self.path = Path(path).expanduser()

    def file(self, name: str) -> Path:
        return self.path / name

    # ---- creation and checks -------------------------------------------------------------------
    def create(self, info: dict, resume: bool = False) -> None:
        """Start a run here: the folder must be new or empty (or a run, with resume)."""
        if not resume:
            self._check_new()
        atomic_write(self.file(CONFIG), json.dumps({"kind": KIND, **info}, indent=2).encode())

    def _check_new(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"{self.path} exists and is not a folder")
        if self.path.is_dir() and any(p.name != RUN_LOCK for p in self.path.iterdir()):
            hint = " (add --resume to continue it)" if self.file(CONFIG).exists() else ""
            raise RunError(f"{self.path} is not empty{hint}; choose a new run folder")

    def prepare(self) -> bool:
        """Before any data is read: check that a new run can start here (a new or empty folder that
        can be made) and make the folder. True if it was made, False if it was there (empty)."""
        self._check_new()
        made = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunError(f"cannot create the run folder {self.path} ({e.strerror or e}); "
                           "choose another folder") from None
        return made

    def discard(self, made: bool) -> None:
        """Undo `prepare` after a run failed before its first checkpoint, so the same command can
        simply be run again: remove the folder if `made`, else what was written into it."""
        if self.file(CHECKPOINT).exists() or not self.path.is_dir():
            return  # a checkpoint is worth keeping: --resume continues from it
        for child in [self.path] if made else list(self.path.iterdir()):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)

    def info(self) -> dict:
        """config.json of an existing run; RunError when this is not a run directory."""
        path = self.file(CONFIG)
        if not self.path.is_dir():
            raise RunError(f"{self.path} is not a run folder (it does not exist or is a file)")
        try:
            info = json.loads(path.read_text())
        except FileNotFoundError:
            raise RunError(f"{self.path} is not a run folder: no {CONFIG} (train one with convscope classify "
                           "train)") from None
        except (OSError, ValueError) as e:
            raise RunError(f"{path} is unreadable: {e}") from None
        if not isinstance(info, dict) or info.get("kind") != KIND:
            raise RunError(f"{path} does not describe a convscope classifier run")
        classes = info.get("classes", [])
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise RunError(f"{path} is damaged: its classes are not a list of names")
        return info

    def check_resumable(self, classes: list[str] | None = None, epochs: int | None = None) -> None:
        """RunError (one line) where resuming this run would go wrong: the data's `classes` (when
        known) are not those it was trained on, the names its outputs stand for (a class folder
        renamed since went on training with its labels shuffled under the old names; one added
        failed only after the data was decoded, as "weights of another model"); the model file
        is there without the checkpoint (deleted to save space: resuming started over and
        replaced the trained model); or `epochs` is fewer than the checkpoint has (the run ended
        at once and said it had trained that many)."""
        recorded = self.info().get("classes")
        if classes is not None and recorded and list(classes) != list(recorded):
            new = [c for c in classes if c not in recorded]
            gone = [c for c in recorded if c not in classes]
            change = "; ".join(([f"new: {', '.join(new[:5])}"] if new else [])
                               + ([f"gone: {', '.join(gone[:5])}"] if gone else [])) or "another order"
            raise RunError(f"{self.path} was trained on other classes than the data has now ({change}); resume it "
                           "with the class folders it was trained on, or train a new run")
        if self.file(MODEL).exists() and not self.file(CHECKPOINT).exists():
            raise RunError(f"{self.path} has {MODEL} but no {CHECKPOINT}, which resuming needs: it would start over "
                           "and replace the trained model; train into a new run folder instead")
        done = self.checkpoint_epoch()
        if epochs is not None and done is not None and epochs < done:
            raise RunError(f"{self.path} has trained {done} epochs already; --epochs {epochs} cannot undo them "
                           f"(give --epochs above {done} to train further)")

    def record_resumed(self, options: dict, run: dict | None = None) -> None:
        """Write the options a resume may change (RESUME_MAY_CHANGE: --epochs to extend the run, the
        device ...) into config.json, which describes the run as it goes on (it said the first
        command's --epochs 10 after a resume to 20); `run`: entries of its "run" record likewise
        (the arithmetic --precision auto resolved to on this device, also for a run folder the CLI
        made before its data loaded)."""
        info = self.info()
        config, record = info.setdefault("config", {}), info.setdefault("run", {})
        if any(config.get(k) != v for k, v in options.items()) or \
                any(record.get(k) != v for k, v in (run or {}).items()):
            config.update(options)
            record.update(run or {})
            atomic_write(self.file(CONFIG), json.dumps(info, indent=2).encode())

    # ---- checkpoints ---------------------------------------------------------------------------
    def save(self, weights: dict[str, torch.Tensor] | None, live: dict[str, torch.Tensor],
             train_state: dict[str, torch.Tensor], meta: dict) -> None:
        """The resume checkpoint (`live` weights as training left them, plus `train_state`) first,
        then the model file (`weights`: what users get; None leaves it as it is, when it keeps an
        earlier, better epoch). A kill between the two leaves the model file an epoch behind the
        checkpoint, which a resume rewrites from it; the other order could leave a model file from
        an epoch the checkpoint never recorded, and a replay of that epoch need not repeat it."""
        save_tensors(self.file(CHECKPOINT), {**{f"model.{k}": v for k, v in live.items()}, **train_state}, meta)
        if weights is not None:
            self.save_model(weights, meta["epoch"], meta["history"][-1]["val_acc"])

    def save_model(self, weights: dict[str, torch.Tensor], epoch: int, val_acc: float) -> None:
        save_tensors(self.file(MODEL), weights, {"epoch": epoch, "kind": KIND, "val_acc": val_acc})

    def model_epoch(self) -> int | None:
        """The epoch the model file says it holds; None without a (readable) model file."""
        return self._header_epoch(MODEL)

    def checkpoint_epoch(self) -> int | None:
        """The last finished epoch, from the checkpoint's header; None without a (readable) checkpoint."""
        return self._header_epoch(CHECKPOINT)

    def _header_epoch(self, name: str) -> int | None:
        from safetensors import safe_open

        try:
            with safe_open(str(self.file(name)), "pt") as f:
                epoch = json.loads((f.metadata() or {}).get("convscope", "{}")).get("epoch")
        except Exception:  # missing, cut short by a kill, not safetensors: rewritten either way
            return None
        return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None

    def load_model_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        if not self.file(MODEL).exists() and self.file(CONFIG).exists():
            # A run stopped before its first epoch ended: say so, and what to do (was "... is missing").
            raise RunError(f"{self.path} holds no trained model yet (no epoch has finished); train it first: "
                           f"convscope classify train -o {self.path} --resume with the run's options")
        return load_tensors(self.file(MODEL))

    def load_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict] | None:
        """(model state, other tensors, meta) of the last finished epoch, or None before the first."""
        if not self.file(CHECKPOINT).exists():
            return None
        tensors, meta = load_tensors(self.file(CHECKPOINT))
        model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        rest = {k: v for k, v in tensors.items() if not k.startswith("model.")}
        return model, rest, meta

    # ---- metrics -------------------------------------------------------------------------------
    def write_metrics(self, history: list[dict]) -> None:
        """The whole table each epoch (rewritten atomically: a resumed run never duplicates rows)."""
        if not history:
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
        atomic_write(self.file(METRICS), buf.getvalue().encode())

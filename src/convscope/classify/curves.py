"""A training run's outputs besides its checkpoint, kept current after every epoch: TensorBoard
scalars and curves.png (loss and accuracy per epoch), drawn from metrics.csv, so that a resumed run's
curves hold its whole history and a killed run keeps them up to its last finished epoch."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

from ..figures import render
from ..images import save_image
from ..tbevents import ScalarWriter
from .run import RunDir


class EpochOutputs:
    """The train callback of the CLI: the progress bar (if any), and after every epoch (once its
    checkpoint and metrics.csv are written) that epoch's TensorBoard scalars and curves.png redrawn,
    so a run killed at any point keeps them up to its last finished epoch, as the checkpoint.
    A kill between an epoch's checkpoint and these outputs leaves them short of it: the resumed run
    adds what is missing at its first epoch, and `finish` after training (a resume may have no epoch
    left to run)."""

    def __init__(self, run: RunDir, bar: Callable | None):
        self.run, self.bar = run, bar
        self.writer = ScalarWriter(run.file("tensorboard"))  # one event file per process: resumes add a file
        self.caught_up = False

    def __call__(self, r) -> None:
        if self.bar is not None:
            self.bar(r)
        if r.done and r.epoch > 0:
            history = read_metrics(self.run)
            if not self.caught_up:
                self._catch_up([row for row in history if row["epoch"] < r.epoch])
            self.writer.add(r.epoch, {"train_loss": r.train_loss, "train_acc": r.train_acc, "val_loss": r.val_loss,
                                      "val_acc": r.val_acc, "lr": r.lr, "seconds": r.seconds})
            draw_curves(self.run, history)

    def finish(self, history: list[dict]) -> None:
        """After training, with the checkpoint's whole history: metrics.csv, TensorBoard and the
        curves made whole if a kill cut them short of the last checkpoint."""
        short = len(read_metrics(self.run)) != len(history)
        if short:
            self.run.write_metrics(history)
        if self._catch_up(history) or short:
            draw_curves(self.run, read_metrics(self.run))

    def _catch_up(self, rows: list[dict]) -> bool:
        """Log the rows' epochs no TensorBoard file holds; whether there were any."""
        self.caught_up = True
        logged = _logged_epochs(self.run)
        missing = [row for row in rows if row["epoch"] not in logged]
        for row in missing:
            self.writer.add(row["epoch"], {k: v for k, v in row.items() if k != "epoch"})
        return bool(missing)


def _logged_epochs(run: RunDir) -> set[int]:
    """Epochs already in the run's TensorBoard files. A process killed after an epoch's checkpoint
    but before its scalars leaves that epoch out; the resumed run, which starts after it, adds it.
    A file cut short by a kill counts with the records before the cut; an unreadable one as holding
    nothing (at worst an epoch then appears twice, with the same values)."""
    from ..tbevents import read_scalars

    epochs: set[int] = set()
    folder = run.file("tensorboard")
    for path in sorted(folder.glob("events.out.tfevents.*")) if folder.is_dir() else []:
        try:
            epochs.update(step for step, tag, _ in read_scalars(path, partial=True) if tag == "val_acc")
        except (OSError, ValueError, IndexError):
            continue
    return epochs


def read_metrics(run: RunDir) -> list[dict]:
    """metrics.csv as rows of floats (epoch an int): the whole history, also of a resumed run."""
    try:
        text = run.file("metrics.csv").read_text()
    except OSError:
        return []
    return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()}
            for row in csv.DictReader(io.StringIO(text))]


def draw_curves(run: RunDir, history: list[dict]) -> None:
    """curves.png: loss and accuracy per epoch, train and validation."""
    if not history:
        return
    from matplotlib.ticker import MaxNLocator

    def draw(fig) -> None:
        epochs = [r["epoch"] for r in history]
        ax1, ax2 = fig.subplots(1, 2)
        ax1.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
        ax1.plot(epochs, [r["val_loss"] for r in history], "o-", label="validation")
        ax1.set(title="loss", xlabel="epoch", ylabel="cross-entropy")
        ax2.plot(epochs, [r["train_acc"] for r in history], "o-", label="train")
        ax2.plot(epochs, [r["val_acc"] for r in history], "o-", label="validation")
        ax2.set(title="accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
        for ax in (ax1, ax2):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no 1.25, 1.5 ticks
            ax.grid(alpha=0.3)
            ax.legend()

    save_image(render(draw, (10, 4)), run.file("curves.png"), None)

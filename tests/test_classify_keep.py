"""Which weights a run keeps and how it is scored: --keep best, early stopping and the best-epoch
rule, a kill between checkpoint and model file, class weights, and evaluate's mistakes and mean
per-class accuracy. Tiny synthetic data (test_classify_train's)."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from convscope.classify.data import DataSplits, ImageData
from convscope.classify.run import RunDir
from convscope.classify.train import train
from convscope.errors import ConfigError
from test_classify_train import blobs, config, splits


def model_file(run) -> tuple[dict, dict]:
    from convscope.classify.run import load_tensors

    return load_tensors(run.file("model.safetensors"))


def scripted_validation(monkeypatch, accuracies, losses=None):
    """The validation accuracy (and loss) of each epoch in turn, as given: where the best epoch lies
    is up to the test."""
    from convscope.classify import train as train_module

    left = iter(zip(losses or [1.0] * len(accuracies), accuracies))
    monkeypatch.setattr(train_module, "_validate", lambda *a, **k: next(left))


def test_early_stopping_with_keep_best_holds_the_best_epochs_weights(tmp_path, monkeypatch):
    scripted_validation(monkeypatch, [0.3, 0.6, 0.9, 0.5, 0.9, 0.4, 1.0])
    best = train(splits(), config(epochs=10, early_stopping=3, keep="best"), RunDir(tmp_path / "best"))
    assert best.stopped_early and best.epochs_run == 6  # no better epoch in 3 after epoch 3 (a tie is not better)
    assert (best.best_epoch, best.best_val_acc, best.model_epoch) == (3, 0.9, 3)
    weights, meta = model_file(RunDir(tmp_path / "best"))
    assert (meta["epoch"], meta["val_acc"]) == (3, 0.9)
    # The same run stopped after epoch 3 has the same weights (epochs replay exactly on the CPU; the
    # simple recipe has no schedule, so fewer epochs do not change the rates).
    scripted_validation(monkeypatch, [0.3, 0.6, 0.9])
    train(splits(), config(epochs=3), RunDir(tmp_path / "short"))
    same, _ = model_file(RunDir(tmp_path / "short"))
    assert weights.keys() == same.keys() and all(torch.equal(weights[k], same[k]) for k in weights)
    # keep="last" (the default) holds the final epoch, whose weights differ.
    scripted_validation(monkeypatch, [0.3, 0.6, 0.9, 0.5, 0.9, 0.4])
    last = train(splits(), config(epochs=10, early_stopping=3), RunDir(tmp_path / "last"))
    final, meta = model_file(RunDir(tmp_path / "last"))
    assert (last.model_epoch, meta["epoch"], last.best_epoch) == (6, 6, 3)
    assert any(not torch.equal(final[k], weights[k]) for k in weights)


def test_keep_best_survives_resume_and_cannot_change_on_resume(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "r")
    scripted_validation(monkeypatch, [0.2, 0.5, 0.4])
    train(splits(), config(epochs=3, keep="best"), run)
    assert model_file(run)[1]["epoch"] == 2
    scripted_validation(monkeypatch, [0.3, 0.7, 0.6])
    resumed = train(splits(), config(epochs=6, keep="best"), run, resume=True)
    assert [r["val_acc"] for r in resumed.history] == [0.2, 0.5, 0.4, 0.3, 0.7, 0.6]
    assert model_file(run)[1]["epoch"] == resumed.model_epoch == resumed.best_epoch == 5
    with pytest.raises(ConfigError, match="--keep best, not --keep last"):
        train(splits(), config(epochs=7), run, resume=True)
    with pytest.raises(ConfigError, match="--keep must be one of last, best"):
        config(keep="first").resolved()


def test_of_equal_accuracies_the_lower_validation_loss_is_better(tmp_path, monkeypatch):
    # Small validation sets tie often: the first of equal epochs was kept, and early stopping ended
    # a run that was still improving its loss.
    scripted_validation(monkeypatch, [0.9, 0.9, 0.9, 0.9, 0.9], losses=[0.5, 0.3, 0.4, 0.6, 0.7])
    result = train(splits(), config(epochs=5, early_stopping=2, keep="best"), RunDir(tmp_path / "r"))
    assert (result.best_epoch, result.model_epoch, result.epochs_run, result.stopped_early) == (2, 2, 4, True)


@pytest.mark.parametrize("keep, accuracies, kept", [("last", [0.5, 0.6], 2), ("best", [0.5, 0.6], 2),
                                                    ("best", [0.6, 0.5], 1)])
def test_a_kill_between_checkpoint_and_model_file_is_repaired_on_resume(tmp_path, monkeypatch, keep, accuracies,
                                                                        kept):
    """The checkpoint is written first: a kill before the model file leaves it an epoch behind, and
    resuming (even with no epoch left to train) writes the weights it should hold."""
    scripted_validation(monkeypatch, accuracies)
    train(splits(), config(epochs=2, keep=keep), RunDir(tmp_path / "whole"))
    whole, whole_meta = model_file(RunDir(tmp_path / "whole"))
    run = RunDir(tmp_path / "killed")
    real = RunDir.save_model

    def killed_at_epoch_2(self, weights, epoch, val_acc):
        if epoch == 2:
            raise KeyboardInterrupt
        real(self, weights, epoch, val_acc)

    scripted_validation(monkeypatch, accuracies)
    monkeypatch.setattr(RunDir, "save_model", killed_at_epoch_2)
    with pytest.raises(KeyboardInterrupt) if kept == 2 else contextlib.nullcontext():  # (a worse epoch 2
        train(splits(), config(epochs=2, keep=keep), run)                       # writes no model file)
    monkeypatch.setattr(RunDir, "save_model", real)
    assert run.load_checkpoint()[2]["epoch"] == 2 and run.model_epoch() == 1
    resumed = train(splits(), config(epochs=2, keep=keep), run, resume=True)
    assert resumed.model_epoch == kept
    weights, meta = model_file(run)
    assert meta["epoch"] == whole_meta["epoch"] == kept
    assert all(torch.equal(weights[k], whole[k]) for k in whole)


def test_evaluate_finds_the_most_confident_mistakes_and_where_the_net_saw_them(tmp_path):
    from convscope.classify.predict import evaluate, load_run, mistake_maps

    train(splits(), config(epochs=4), RunDir(tmp_path / "r"))
    loaded = load_run(tmp_path / "r")
    val = blobs(48, 1)
    labels = (val.labels + 1) % 3  # rotated: the better the net, the surer its mistakes
    logits = loaded.model(val.images.float() / 255).detach()
    p = logits.softmax(1)
    wrong = (logits.argmax(1) != labels).nonzero().flatten().tolist()
    ev = evaluate(loaded, val.images, labels, "cpu", mistakes=5)
    assert len(wrong) >= 5 and len(ev.mistakes) == 5
    by_loss = sorted(wrong, key=lambda i: p[i, labels[i]].item())
    assert [m.index for m in ev.mistakes] == by_loss[:5]
    for m in ev.mistakes:
        assert m.actual == labels[m.index] and m.predicted == logits[m.index].argmax()
        assert m.p_actual == pytest.approx(p[m.index, m.actual].item(), rel=1e-4)
        assert m.loss == pytest.approx(-math.log(m.p_actual))
    assert len(evaluate(loaded, val.images, labels, "cpu", mistakes=1000).mistakes) == len(wrong)
    pairs = ev.most_confused(val.classes, n=3)
    off = ev.confusion.clone().fill_diagonal_(0)
    assert pairs and pairs[0][2] == int(off.max()) and [k for _, _, k in pairs] == sorted((k for _, _, k in pairs),
                                                                                          reverse=True)
    for a, b, k in pairs:
        assert a != b and k == ev.confusion[val.classes.index(a), val.classes.index(b)] > 0
    assert evaluate(loaded, val.images, labels, "cpu").mistakes == []
    maps = mistake_maps(loaded, val.images, ev.mistakes[:2], "cpu")
    assert [tuple(m.shape) for m in maps] == [(16, 16)] * 2
    assert all(float(m.min()) >= 0 and float(m.max()) == pytest.approx(1.0) for m in maps)
    with pytest.raises(ConfigError, match="mistakes must be a whole number"):
        evaluate(loaded, val.images, labels, "cpu", mistakes=-1)


def test_balanced_class_weights_count_each_class_the_same(tmp_path, monkeypatch):
    from convscope.classify import setup as setup_module
    from convscope.classify.setup import class_weights

    labels = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    w = class_weights(labels, 4)  # class 3 has no training image
    assert torch.allclose(w, torch.tensor([10 / (4 * 6), 10 / (4 * 3), 10 / 4, 0.0]))
    assert torch.bincount(labels, weights=w[labels]).tolist() == pytest.approx([2.5, 2.5, 2.5])  # each class weighs the same
    assert torch.equal(class_weights(torch.arange(6) % 3, 3), torch.ones(3))
    # The training loss is weighted so (the validation loss is not: it stays the plain cross-entropy).
    made = []
    real = setup_module.nn.CrossEntropyLoss
    monkeypatch.setattr(setup_module.nn, "CrossEntropyLoss", lambda **kw: made.append(kw) or real(**kw))
    rare = blobs(96, 0).subset(torch.tensor([i for i in range(96) if i % 3 != 2 or i < 12]))  # 4 blue of 68
    data = DataSplits(rare, blobs(24, 1), "synthetic", "test")
    train(data, config(epochs=1, class_weights="balanced"), RunDir(tmp_path / "b"))
    assert torch.allclose(made[-1]["weight"].cpu(), torch.tensor([68 / 96, 68 / 96, 68 / 12]))
    train(data, config(epochs=1), RunDir(tmp_path / "n"))
    assert made[-1]["weight"] is None
    with pytest.raises(ConfigError, match="--class-weights must be one of none, balanced"):
        config(class_weights="inverse").resolved()


def test_balanced_accuracy_weighs_each_class_the_same(tmp_path):
    from convscope.classify.predict import evaluate, load_run

    train(splits(), config(epochs=1), RunDir(tmp_path / "r"))
    loaded = load_run(tmp_path / "r")
    val = blobs(48, 1)
    ev = evaluate(loaded, val.images, val.labels, "cpu")
    assert len(set(ev.per_class.values())) > 1  # (classes scored differently, or the test shows nothing)
    worst = min(ev.per_class, key=ev.per_class.get)
    more = torch.tensor(list(range(48)) + [i for i in range(48) if val.classes[val.labels[i]] == worst] * 5)
    ev6 = evaluate(loaded, val.images[more], val.labels[more], "cpu")  # the worst class six times over
    assert ev6.balanced_accuracy == pytest.approx(ev.balanced_accuracy)
    assert ev6.accuracy < ev.accuracy  # the plain accuracy follows the counts


def test_a_kept_best_epoch_evaluates_to_its_recorded_accuracy(tmp_path):
    """Real validation: the rotated labels (red called green, ...) score worse the better the net
    learns, so the last epoch is the worst and the model file keeps an earlier one."""
    from convscope.classify.predict import evaluate, load_run

    val = blobs(48, 1)
    data = DataSplits(blobs(96, 0), ImageData(val.images, (val.labels + 1) % 3, val.classes, None, []),
                      "synthetic", "test")
    result = train(data, config(epochs=4, keep="best"), RunDir(tmp_path / "r"))
    accs = [r["val_acc"] for r in result.history]
    assert accs[-1] < max(accs) and result.model_epoch == accs.index(max(accs)) + 1
    loaded = load_run(tmp_path / "r")
    assert loaded.epoch == result.model_epoch
    assert evaluate(loaded, data.val.images, data.val.labels, "cpu").accuracy == pytest.approx(max(accs), abs=1e-6)

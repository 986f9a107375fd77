"""`convscope classify ...` end to end on a tiny image folder, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convscope.cli import main
from convscope.images import sidecar_path

CLASSES = ("red", "green", "blue")


def make_folder(root, n_train=12, n_test=6, size=16, seed=0, corrupt=True):
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for ci, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
                r, c = rng.integers(0, size - 6, 2)
                a[r:r + 6, c:c + 6, ci] = 230
                Image.fromarray(a).save(folder / f"{i}.png")
    if corrupt:
        (root / "train" / "red" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls")
    data = make_folder(root / "data")
    run = root / "run"
    code = main(["classify", "train", "--data", str(data), "-o", str(run), "--epochs", "4", "--batch-size", "8",
                 "--device", "cpu", "--cache-dir", str(root / "cache"), "-q"])
    assert code == 0
    return data, run


def test_train_writes_a_complete_run(trained, capsys):
    data, run = trained
    for name in ("config.json", "model.safetensors", "checkpoint.safetensors", "metrics.csv", "curves.png"):
        assert (run / name).exists(), name
    assert list((run / "tensorboard").iterdir())
    info = json.loads((run / "config.json").read_text())
    assert info["classes"] == sorted(CLASSES) and info["run"]["skipped"] == 1
    from convscope.classify.optim import resolve_precision  # what --precision auto chose, recorded
    assert info["run"]["arithmetic"] == resolve_precision("auto", torch.device("cpu"), "simple")
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss") and len(rows) == 5


def test_evaluate_and_predict(trained, capsys, tmp_path):
    data, run = trained
    assert main(["classify", "evaluate", str(run), "--json", "--device", "cpu", "-o", str(tmp_path / "cm.png")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["accuracy"] > 0.6 and metrics["count"] == 18 and len(metrics["confusion"]) == 3
    assert (tmp_path / "cm.png").exists() and sidecar_path(tmp_path / "cm.png").exists()
    assert metrics["tta"] == "none"
    for mode in ("flip", "shift"):
        argv = ["classify", "evaluate", str(run), "--json", "--device", "cpu", "--tta"] + ([mode] if mode != "flip" else [])
        assert main(argv) == 0
        tta = json.loads(capsys.readouterr().out)
        assert tta["tta"] == mode and tta["count"] == 18 and tta["accuracy"] > 0.6
    assert main(["classify", "predict", str(run), str(data / "test" / "blue"), "--json", "--top", "2",
                 "--figure", str(tmp_path / "p.png"), "--device", "cpu"]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert len(preds) == 6 and all(p["actual"] == "blue" and len(p["top"]) == 2 for p in preds)
    assert sum(p["top"][0]["class"] == "blue" for p in preds) >= 4
    assert (tmp_path / "p.png").exists()
    assert main(["classify", "predict", str(run), str(data / "test" / "red" / "0.png"), "--csv", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("path,actual,rank,class,probability")


@pytest.mark.parametrize("argv", [
    ["predict", "{run}", "{photo}", "--figure", "{photo}"],               # the image it predicts
    ["predict", "{run}", "{folder}", "--figure", "{photo}"],              # an image of the folder it predicts
    ["predict", "{run}", "{photo}", "--figure", "{run}/config.png"],      # its sidecar over the run's config
    ["evaluate", "{run}", "--data", "{folder}", "--mistakes-figure", "{photo}"],
])
def test_a_figure_over_one_of_the_inputs_is_refused_and_the_input_kept(trained, tmp_path, capsys, argv):
    import shutil

    run, folder = tmp_path / "run", tmp_path / "data"
    shutil.copytree(trained[1], run)  # a copy: the module's run stays whole whatever happens here
    shutil.copytree(trained[0] / "test", folder)
    photo = folder / "red" / "0.png"
    before = {p: p.read_bytes() for p in (photo, run / "config.json")}
    code = main(["classify", *[a.format(run=run, photo=photo, folder=folder) for a in argv], "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "choose another output name" in err
    assert {p: p.read_bytes() for p in before} == before
    assert not (run / "config.png").exists() and not (folder / "red" / "0.json").exists()


def test_predict_skips_unreadable_images_with_a_count(trained, capsys, tmp_path):
    import shutil

    data, run = trained
    folder = tmp_path / "mixed"
    shutil.copytree(data / "test" / "blue", folder)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "empty.jpg").write_bytes(b"")
    assert main(["classify", "predict", str(run), str(folder), "--json", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 6  # the readable ones, all of them
    assert "skipped 2 unreadable image(s) of 8" in captured.err and len(captured.err.strip().splitlines()) == 1
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    shutil.copy(folder / "broken.png", only_bad / "x.png")
    assert main(["classify", "predict", str(run), str(only_bad), "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert "none of the 1 image(s) could be read" in captured.err and captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1


def test_resume_continues_to_more_epochs(trained, tmp_path):
    data, run = trained
    assert main(["classify", "train", "--data", str(data), "-o", str(run), "--epochs", "5", "--batch-size", "8",
                 "--device", "cpu", "--cache-dir", str(tmp_path), "--resume", "-q"]) == 0
    assert len((run / "metrics.csv").read_text().splitlines()) == 6


def test_a_run_folder_is_a_net_for_the_vis_commands(trained, tmp_path):
    data, run = trained
    image = str(data / "test" / "green" / "0.png")
    assert main(["activations", image, "--net", str(run), "-o", str(tmp_path / "a.png"), "-q"]) == 0
    assert main(["explain", image, "--net", str(run), "-o", str(tmp_path / "e.png"), "-q", "--device", "cpu"]) == 0
    assert main(["layers", "--net", str(run)]) == 0


def test_an_empty_net_name_is_refused_not_the_run_in_the_current_folder(trained, monkeypatch, capsys):
    """--net '' named the current folder: inside a run folder that run was used, exit 0."""
    from convscope import get_net
    from convscope.errors import ConfigError

    data, run = trained
    monkeypatch.chdir(run)
    assert main(["layers", "--net", ""]) == 2
    err = capsys.readouterr().err.strip()
    assert "--net needs a name" in err and len(err.splitlines()) == 1
    with pytest.raises(ConfigError, match="the net name must be"):
        get_net("")


def test_predict_imagenet_without_training(capsys):
    import os

    import matplotlib
    photo = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    assert main(["classify", "predict", "--net", "efficientnet_lite0", photo, "--device", "cpu"]) == 0
    assert "military uniform" in capsys.readouterr().out.splitlines()[0].split(":", 1)[1].split(",")[0]


@pytest.mark.parametrize("argv, message", [
    (["classify", "evaluate", "{tmp}"], "not a run folder"),
    (["classify", "evaluate", "{run}", "--device", "cpu", "-o", "{tmp}/cm.txt"], "extension"),
    (["classify", "predict", "{tmp}/nothing.png", "--net", "efficientnet_lite0"], "no such file"),
    (["classify", "predict", "{run}"], "give images"),
    (["classify", "predict", "{run}", "{data}", "--json", "--csv"], "not allowed with"),  # was JSON alone
    # A run folder among the images: its curves.png was predicted (with --net, the run ignored).
    (["classify", "predict", "--net", "efficientnet_lite0", "{run}", "{data}"],
     "is a run folder, not images: drop --net efficientnet_lite0"),
    (["classify", "predict", "{run}", "{data}", "{run}"], "is a run folder, not images"),
    (["classify", "predict", "{run}", "{data}", "{tmp}"], "no images in this folder"),  # was skipped, exit 0
    # The predictions figure replaced the run's training curves, exit 0.
    (["classify", "predict", "{run}", "{data}", "--figure", "{run}/curves.png"],
     "would replace the run folder"),
    (["classify", "evaluate", "{run}", "--device", "cpu", "-o", "{run}/curves.png"], "own curves.png"),
    (["classify", "train", "--data", "{tmp}/missing", "-o", "{tmp}/r"], "missing"),
    (["classify", "train", "--data", "{data}", "-o", "{run}"], "not empty"),
    (["classify", "train", "--data", "{data}", "-o", "{tmp}/r2", "--model", "resnet81"], "did you mean"),
    (["classify", "train", "--data", "{data}", "-o", "{tmp}/r3", "--lr", "-1"], "--lr"),
    # Past float32's range a rate was a RuntimeError traceback from the optimizer's first step.
    (["classify", "train", "--data", "{data}", "-o", "{tmp}/r3", "--lr", "1e39"],
     "--lr must be a number above 0 and at most 1e+12"),
    (["classify", "train", "--data", "{data}", "-o", "{tmp}/r3", "--optimizer", "sgd", "--weight-decay", "1e300"],
     "--weight-decay must be"),
    (["classify", "train", "--data", "{data}", "-o", "{tmp}/r4", "--device", "cuda:7"], "cuda"),
    # Said by the loader after the data was decoded (and as "cutout must be ...", no option named).
    (["classify", "train", "--data", "{data}", "-o", "{tmp}/r3", "--cutout", "40"],
     "--cutout (40) must be at most --input-size (32)"),
    (["classify", "train", "--data", "{data}", "-o", "{tmp}/r3", "--translate", "32"],
     "--translate (32) must be below --input-size (32)"),
    (["classify", "train", "--data", "{data}", "-o", "{run}", "--resume", "--model", "vgg19-bn"], "trained model"),
    # Ignored without a word (no snapshots were recorded).
    (["classify", "train", "--data", "{data}", "-o", "{tmp}/r3", "--snapshot-layer", "conv1"],
     "--snapshot-layer names the layer --snapshots records; add --snapshots"),
    # Ignored without a word: no flips to alternate (simple's recipe has none).
    (["classify", "train", "--data", "{data}", "-o", "{tmp}/r3", "--alternate-flip"], "add --flip or drop --alternate-flip"),
    (["classify", "train", "--data", "{data}", "-o", "{tmp}/r3", "--model", "vgg19-bn", "--alternate-flip",
      "--no-flip"], "add --flip or drop --alternate-flip"),
    # The learning rate was still rising when the run ended, without a word.
    (["classify", "train", "--data", "{data}", "-o", "{tmp}/r3", "--epochs", "2", "--warmup", "2"],
     "--warmup 2 is not shorter than the run's 2 epochs"),
    (["classify", "train", "--data", "{data}", "-o", "{tmp}/r3", "--warmup", "12.5"],
     "--warmup 12.5 is not shorter than the run's 10 epochs (--epochs, or the model's recipe)"),
])
def test_bad_input_is_one_line_and_exit_2(trained, tmp_path, capsys, argv, message):
    data, run = trained
    argv = [a.format(tmp=tmp_path, run=run, data=data) for a in argv]
    assert main(argv + ["-q"] if argv[1] == "train" else argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert message in err.lower() and len(err.splitlines()) == 1, err
    assert captured.out == ""  # found before any work: not a report first, then the error
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()


def test_kill_9_at_any_moment_then_resume_ends_like_an_uninterrupted_run(tmp_path):
    """A real SIGKILL (twice, at different moments) of a training process; every checkpoint left
    behind loads, and the resumed run's metrics equal those of a run never interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from convscope.classify.run import RunDir

    data = make_folder(tmp_path / "data", n_train=16, n_test=4, corrupt=False)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def command(run, resume=False):
        return [sys.executable, "-m", "convscope.cli", "classify", "train", "--data", str(data), "-o", str(run),
                "--epochs", "6", "--batch-size", "8", "--device", "cpu", "--cache-dir", str(tmp_path / "c"), "-q",
                "--translate", "2", "--flip"] + (["--resume"] if resume else [])

    whole = tmp_path / "whole"
    subprocess.run(command(whole), env=env, check=True, capture_output=True)
    killed = tmp_path / "killed"
    for attempt, delay in enumerate((0.3, 0.7)):
        proc = subprocess.Popen(command(killed, resume=attempt > 0), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while not (killed / "checkpoint.safetensors").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = RunDir(killed).load_checkpoint()
        assert state is not None and state[2]["epoch"] >= 1  # loadable whatever the moment
    subprocess.run(command(killed, resume=True), env=env, check=True, capture_output=True)
    a = (whole / "metrics.csv").read_text().splitlines()
    b = (killed / "metrics.csv").read_text().splitlines()
    strip = lambda rows: [",".join(r.split(",")[:-1]) for r in rows]  # all columns but seconds
    assert len(a) == len(b) == 7 and strip(a) == strip(b)


def test_torchrun_two_cpu_processes_with_gloo(tmp_path):
    """DistributedDataParallel through torchrun: 2 CPU processes, gloo; rank 0 writes the run."""
    import os
    import subprocess
    import sys

    data = make_folder(tmp_path / "data", n_train=16, n_test=4, corrupt=False)
    run = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "convscope.cli", "classify", "train", "--data", str(data), "-o", str(run), "--epochs", "3",
         "--batch-size", "8", "--device", "cpu", "--cache-dir", str(tmp_path / "c"), "-q"],
        env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 4
    losses = [float(r.split(",")[1]) for r in rows[1:]]
    assert losses[-1] < losses[0]
    assert done.stderr.count("validation accuracy") == 1  # one process reports


@pytest.mark.parametrize("argv, message", [
    (["--precision", "fp16"], "needs a cuda device"),                    # found after the data is loaded
    (["--snapshots", "--snapshot-layer", "features.O"], "did you mean"),   # found before the first epoch
    (["--data", "{tmp}/missing"], "not found"),
])
def test_a_failed_new_run_leaves_no_run_folder(trained, tmp_path, capsys, argv, message):
    # A run folder holding only config.json used to stay behind, so running the command again
    # (with the option fixed) failed with "not empty (add --resume to continue it)".
    data, _ = trained
    argv = [a.format(tmp=tmp_path) for a in argv]
    base = ["classify", "train", "--data", str(data), "--epochs", "1", "--batch-size", "8", "--device", "cpu",
            "--cache-dir", str(tmp_path / "cache"), "-q"]
    empty = tmp_path / "empty"
    empty.mkdir()
    for out, left in ((tmp_path / "new" / "run", False), (empty, True)):
        assert main(base + ["-o", str(out)] + argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err.splitlines()[-1].lower() and "Traceback" not in err, err
        assert out.exists() == left and (not left or list(out.iterdir()) == [])


def test_run_folder_that_cannot_be_made(trained, tmp_path, capsys):
    data, _ = trained
    (tmp_path / "afile").write_text("keep")
    assert main(["classify", "train", "--data", str(data), "-o", str(tmp_path / "afile" / "run"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot create the run folder" in err and len(err.splitlines()) == 1, err
    assert (tmp_path / "afile").read_text() == "keep"


def test_tensorboard_and_curves_are_written_every_epoch(tmp_path, monkeypatch):
    # They used to be written once, after the last epoch, and TensorBoard got only that epoch:
    # a run killed before its end had neither, and a finished one had one point per (resumed) run.
    import glob

    from convscope.classify import train as train_module
    from convscope.errors import UserError
    from convscope.tbevents import read_scalars

    data = make_folder(tmp_path / "data", n_train=8, n_test=3, size=8, corrupt=False)
    run = tmp_path / "run"
    real = train_module.train

    def stopped_after_epoch_2(*a, callback=None, **k):
        def spy(r):
            if callback is not None:
                callback(r)
            if r.done and r.epoch == 2:
                raise UserError("stopped here by the test")
        return real(*a, callback=spy, **k)

    def steps():
        return sorted(s for f in glob.glob(str(run / "tensorboard" / "*"))
                      for s, tag, _ in read_scalars(f) if tag == "val_acc")

    base = ["classify", "train", "--data", str(data), "-o", str(run), "--epochs", "3", "--batch-size", "8",
            "--device", "cpu", "--cache-dir", str(tmp_path / "c"), "-q"]
    monkeypatch.setattr(train_module, "train", stopped_after_epoch_2)
    assert main(base) == 2
    assert steps() == [1, 2] and (run / "curves.png").exists()
    monkeypatch.setattr(train_module, "train", real)
    assert main(base + ["--resume"]) == 0
    assert steps() == [1, 2, 3]


def test_evaluate_on_a_test_folder_uses_all_its_images(trained, capsys):
    # --data with a folder of class sub-folders used to evaluate a 10% hold-out of it (2 of 18 images).
    data, run = trained
    assert main(["classify", "evaluate", str(run), "--data", str(data / "test"), "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 18
    # Some of the run's classes: the others have no accuracy (not 0).
    import shutil
    part = data.parent / "part"
    shutil.copytree(data / "test" / "green", part / "green")
    assert main(["classify", "evaluate", str(run), "--data", str(part), "--json", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["count"] == 6 and list(metrics["per_class"]) == ["green"]
    # A class the run does not know: one line, exit 2.
    shutil.copytree(data / "test" / "green", part / "purple")
    assert main(["classify", "evaluate", str(run), "--data", str(part), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "purple" in err and len(err.splitlines()) == 1


def test_evaluate_on_a_copy_of_the_training_data_warns(tmp_path, capsys):
    # A copy (or a moved folder) is another path: scored whole, its training images counted, silently.
    import shutil

    make_folder(tmp_path / "d", n_train=10, n_test=0, size=8, corrupt=False)
    data, run = tmp_path / "d" / "train", tmp_path / "run"
    assert main(["classify", "train", "--data", str(data), "-o", str(run), "--epochs", "1", "--batch-size", "8",
                 "--device", "cpu", "--cache-dir", str(tmp_path / "c"), "-q"]) == 0
    shutil.copytree(data, tmp_path / "copy")
    capsys.readouterr()
    assert main(["classify", "evaluate", str(run), "--data", str(tmp_path / "copy"), "--device", "cpu"]) == 0
    assert "if it is a copy of the run's data, its training images are scored too" in capsys.readouterr().err
    # another folder with train/ only: its own hold-out, and no "changed since training" warning
    other = make_folder(tmp_path / "o", n_train=4, n_test=0, size=8, corrupt=False)
    shutil.rmtree(other / "test")
    assert main(["classify", "evaluate", str(run), "--data", str(other), "--device", "cpu"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_evaluate_finds_the_runs_data_from_another_folder(tmp_path, monkeypatch, capsys):
    # config.json keeps --data as typed ("data", relative): evaluate from elsewhere said "not found".
    make_folder(tmp_path / "data", n_train=6, n_test=2, size=8, corrupt=False)
    monkeypatch.chdir(tmp_path)
    assert main(["classify", "train", "--data", "data", "-o", "run", "--epochs", "1", "--batch-size", "8",
                 "--device", "cpu", "--cache-dir", str(tmp_path / "c"), "-q"]) == 0
    monkeypatch.chdir(tmp_path / "data")
    assert main(["classify", "evaluate", str(tmp_path / "run"), "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 6  # test/: 2 per class


@pytest.mark.parametrize("change, message", [
    (["--data", "{other}"], "was trained on --data"),
    (["--lr", "0.5"], "was trained with --lr 1.0, not --lr 0.5"),
    (["--flip"], "was trained with --no-flip, not --flip"),
    (["--keep", "best"], "was trained with --keep last, not --keep best"),  # the best epoch may be gone
])
def test_resume_refuses_other_data_or_options(trained, tmp_path, capsys, change, message):
    # --resume used to continue the checkpoint on whatever it was given (another folder, another
    # learning rate) while config.json still described the first run.
    data, run = trained
    other = make_folder(tmp_path / "other", n_train=4, n_test=2, size=8, corrupt=False)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    argv = ["classify", "train", "--data", str(data), "-o", str(run), "--epochs", "9", "--batch-size", "8",
            "--device", "cpu", "--cache-dir", str(tmp_path / "c"), "--resume", "-q"]
    argv += [a.format(other=other) for a in change]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before  # nothing touched


def test_keep_best_is_reported_and_evaluated(tmp_path, capsys, monkeypatch):
    from convscope.classify import train as train_module

    accuracies = iter([0.5, 0.9, 0.6, 0.7])  # the second epoch is the best
    monkeypatch.setattr(train_module, "_validate", lambda *a, **k: (1.0, next(accuracies)))
    data = make_folder(tmp_path / "data", n_train=4, n_test=2, size=8, corrupt=False)
    run = tmp_path / "run"
    assert main(["classify", "train", "--data", str(data), "-o", str(run), "--epochs", "6", "--batch-size", "4",
                 "--input-size", "8", "--early-stopping", "2", "--keep", "best", "--device", "cpu",
                 "--cache-dir", str(tmp_path / "c"), "-q"]) == 0
    err = capsys.readouterr().err
    assert "after 4 epoch(s) (stopped early)" in err
    assert "model.safetensors holds epoch 2 (the best, validation accuracy 0.9000)" in err
    assert json.loads((run / "config.json").read_text())["config"]["keep"] == "best"
    monkeypatch.undo()
    assert main(["classify", "evaluate", str(run), "--device", "cpu"]) == 0
    assert "; weights of epoch 2" in capsys.readouterr().out
    assert main(["classify", "evaluate", str(run), "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["epoch"] == 2


def test_evaluate_lists_and_draws_the_most_confident_mistakes(trained, capsys, tmp_path):
    from convscope.images import read_png_metadata

    _, run = trained
    # A test folder with two classes' names swapped: the run is sure of the images it gets "wrong".
    data = make_folder(tmp_path / "swapped", n_train=0, n_test=4, size=16, seed=5, corrupt=False) / "test"
    (data / "red").rename(data / "tmp")
    (data / "green").rename(data / "red")
    (data / "tmp").rename(data / "green")
    argv = ["classify", "evaluate", str(run), "--data", str(data), "--device", "cpu", "--mistakes", "3"]
    assert main(argv + ["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    wrong = report["count"] - sum(report["confusion"][i][i] for i in range(3))
    mistakes = report["mistakes"]
    assert wrong >= 3 and len(mistakes) == 3
    assert {tuple(report["most_confused"][0][:2]), tuple(report["most_confused"][1][:2])} == {("red", "green"),
                                                                                              ("green", "red")}
    assert [m["p_actual"] for m in mistakes] == sorted(m["p_actual"] for m in mistakes)  # most confident first
    for m in mistakes:
        assert m["predicted"] != m["actual"] and m["p_predicted"] > m["p_actual"]
        assert Path(m["image"]).parent.name == m["actual"] and Path(m["image"]).is_file()
    assert main(argv + ["--mistakes-figure", str(tmp_path / "m.png")]) == 0
    out = capsys.readouterr().out
    assert f"the 3 most confident of {wrong} mistake(s):" in out
    assert f"{mistakes[0]['image']}: actual {mistakes[0]['actual']}" in out
    assert read_png_metadata(tmp_path / "m.png")["mistakes"] == mistakes
    # The figure alone lists (and draws) up to 16; none wrong is said so.
    assert main(["classify", "evaluate", str(run), "--device", "cpu", "--json"]) == 0
    own = json.loads(capsys.readouterr().out)
    own_wrong = own["count"] - sum(own["confusion"][i][i] for i in range(3))
    assert main(["classify", "evaluate", str(run), "--device", "cpu", "--mistakes-figure", str(tmp_path / "n.png")]) == 0
    assert len(read_png_metadata(tmp_path / "n.png")["mistakes"]) == min(16, own_wrong)
    assert ("no mistakes" in capsys.readouterr().out) == (own_wrong == 0)
    # A figure of none would say "no mistakes" of a run that made some.
    assert main(["classify", "evaluate", str(run), "--mistakes", "0", "--mistakes-figure", str(tmp_path / "z.png")]) == 2
    assert "--mistakes 0 leaves --mistakes-figure nothing to draw" in capsys.readouterr().err
    assert not (tmp_path / "z.png").exists()


@pytest.mark.parametrize("stop_after, kept", [(1, True), (0, False)])
def test_ctrl_c_says_what_is_kept(tmp_path, monkeypatch, capsys, stop_after, kept):
    # Ctrl-C said only "interrupted": not where the finished epochs are, nor that --resume goes on;
    # before the first epoch it left a folder with config.json alone, which blocked the same command.
    from convscope.classify import train as train_module

    data = make_folder(tmp_path / "data", n_train=4, n_test=2, size=8, corrupt=False)
    run = tmp_path / "new" / "run"
    real = train_module.train

    def interrupted(*a, callback=None, **k):
        if stop_after == 0:
            raise KeyboardInterrupt

        def spy(r):
            if callback is not None:
                callback(r)
            if r.done and r.epoch == stop_after:
                raise KeyboardInterrupt
        return real(*a, callback=spy, **k)

    monkeypatch.setattr(train_module, "train", interrupted)
    assert main(["classify", "train", "--data", str(data), "-o", str(run), "--epochs", "3", "--batch-size", "8",
                 "--device", "cpu", "--cache-dir", str(tmp_path / "c"), "-q"]) == 130
    err = capsys.readouterr().err
    assert ("--resume" in err and "1 finished epoch" in err) if kept else "nothing kept" in err, err
    assert run.exists() == kept


def test_transfer_decode_size_is_not_set_by_one_small_first_image(tmp_path):
    # The first image sorted (a 12 px thumbnail) set the size every image was decoded to.
    from convscope.classify.folders import decode_size

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(5):
            Image.new("RGB", (48, 40)).save(tmp_path / name / f"{i + 1}.png")
    Image.new("RGB", (12, 12)).save(tmp_path / "a" / "0.png")
    assert decode_size(str(tmp_path), 32, "transfer:vgg19") == 32
    assert decode_size(str(tmp_path), 224, "transfer:vgg19") == 40   # small images stay small
    assert decode_size(str(tmp_path), 224, "simple") == 224
    # 70 thumbnails sorted before 50 photos: the sample must reach past the first 64 files; hidden
    # folders (not part of the data) are not looked at.
    many = tmp_path / "many"
    for name, n, side in (("a", 70, 12), ("b", 50, 48)):
        (many / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (side, side - 8 if side > 12 else side)).save(many / name / f"{i:03d}.png")
    (many / ".cache").mkdir()
    Image.new("RGB", (500, 500)).save(many / ".cache" / "big.png")
    assert decode_size(str(many), 224, "transfer:vgg19") == 40


def test_transfer_decode_size_passes_over_a_decompression_bomb(tmp_path, recwarn):
    # A PNG claiming 60000x60000 px raised PIL's DecompressionBombError (no OSError) from the
    # header scan: a traceback from classify train/evaluate of a transfer model, where the data
    # layer skips the image with a warning and a count.
    from test_images import _png_bytes
    from convscope.classify.folders import decode_size

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (40, 40)).save(tmp_path / name / "1.png")
    (tmp_path / "a" / "0.png").write_bytes(_png_bytes(60000, 60000))
    assert decode_size(str(tmp_path), 224, "transfer:efficientnet_lite0") == 40
    (tmp_path / "b" / "0.png").write_bytes(_png_bytes(12000, 12000))  # over PIL's warning limit only
    assert decode_size(str(tmp_path), 224, "transfer:efficientnet_lite0") == 224
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


@pytest.mark.parametrize("command", [["evaluate", "{half}"], ["predict", "{half}", "{img}"],
                                     ["export", "{half}", "-o", "{tmp}/m.onnx"]])
def test_a_run_without_a_finished_epoch_says_so(trained, tmp_path, capsys, command):
    # Was "RUN/model.safetensors is missing", which says neither why nor what to do.
    import shutil

    data, run = trained
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(run / "config.json", half / "config.json")
    argv = ["classify"] + [a.format(half=half, tmp=tmp_path, img=data / "test" / "red" / "0.png") for a in command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "no epoch has finished" in err and "--resume" in err and len(err.splitlines()) == 1, err


def test_evaluate_on_a_split_folder_of_other_classes_says_so_before_decoding(trained, tmp_path, capsys, monkeypatch):
    # Both splits were decoded first (all of a large training set), then "(cat, dog, ...)" differ.
    from convscope.classify import data as data_module

    _, run = trained
    other = tmp_path / "other"
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (other / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(other / split / name / "0.png")

    def no_decoding(*args, **kwargs):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr(data_module, "_decode_listing", no_decoding)
    assert main(["classify", "evaluate", str(run), "--data", str(other), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "has class folders the run does not know (cat, dog)" in err and err.count("\n") == 1


@pytest.mark.parametrize("command", ["train", "lr-find", "evaluate"])
def test_data_root_with_a_folder_is_refused(trained, tmp_path, capsys, command):
    # --data-root says where CIFAR-10 is: with a folder as --data it was ignored without a word.
    data, run = trained
    argv = {"train": ["train", "--data", str(data), "-o", str(tmp_path / "r"), "--epochs", "1"],
            "lr-find": ["lr-find", "--data", str(data), "--steps", "10"],
            "evaluate": ["evaluate", str(run), "--data", str(data / "test")]}[command]
    assert main(["classify", *argv, "--data-root", str(tmp_path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--data-root says where CIFAR-10 is" in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_evaluate_on_another_split_folder_with_some_of_the_runs_classes(trained, tmp_path, capsys):
    # Its test/ split is a test set as a plain folder is: some of the run's classes are fine (it was
    # refused, "the data's classes (green) differ", where the plain folder was scored).
    import shutil

    data, run = trained
    other = tmp_path / "other"
    for split in ("train", "test"):
        shutil.copytree(data / "test" / "green", other / split / "green")
    (other / "test" / "green" / "0.png").unlink()
    assert main(["classify", "evaluate", str(run), "--data", str(other), "--json", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["count"] == 5 and list(metrics["per_class"]) == ["green"]
    assert main(["classify", "evaluate", str(run), "--data", str(other), "--device", "cpu"]) == 0
    assert "on 5 images (all images of its test/ split)" in capsys.readouterr().out


def test_evaluate_on_a_train_and_test_folder_decodes_the_test_images_only(trained, capsys, monkeypatch):
    # The whole training split was decoded first (minutes for a large photo folder), then set aside.
    import json

    from convscope.classify import data as data_module

    data, run = trained
    decoded = []
    real = data_module._decode_listing
    monkeypatch.setattr(data_module, "_decode_listing",
                        lambda listing, *a, **k: decoded.append(Path(listing.folder)) or real(listing, *a, **k))
    assert main(["classify", "evaluate", str(run), "--device", "cpu", "--json"]) == 0
    assert decoded == [data.resolve() / "test"]
    report = json.loads(capsys.readouterr().out)
    assert report["count"] == 18 and sum(map(sum, report["confusion"])) == 18  # 6 per class


def test_resume_after_a_class_folder_was_renamed_is_refused(tmp_path, capsys):
    # The run went on with its labels shuffled under config.json's old class names.
    data = make_folder(tmp_path / "data", n_train=4, n_test=2, size=8, corrupt=False)
    run = tmp_path / "run"
    argv = ["classify", "train", "--data", str(data), "-o", str(run), "--epochs", "1", "--batch-size", "4",
            "--device", "cpu", "--cache-dir", str(tmp_path / "c"), "-q"]
    assert main(argv) == 0
    for split in ("train", "test"):
        (data / split / "blue").rename(data / split / "teal")
    capsys.readouterr()
    before = (run / "checkpoint.safetensors").read_bytes()
    assert main(argv[:-1] + ["--epochs", "2", "--resume", "-q"]) == 2
    err = capsys.readouterr().err
    assert "trained on other classes than the data has now (new: teal; gone: blue)" in err and err.count("\n") == 1
    assert (run / "checkpoint.safetensors").read_bytes() == before


@pytest.mark.parametrize("command", [["evaluate", "{bad}"], ["predict", "{bad}", "{img}"],
                                     ["export", "{bad}", "-o", "{tmp}/m.onnx"]])
@pytest.mark.parametrize("edit, words", [({"input_size": "x"}, "--input-size"), ({"hidden": [0]}, "--hidden"),
                                         ({"input_size": None}, "--input-size"),  # (a TypeError, as "x" was)
                                         ({"classes": ["red", "red", "blue"]}, "repeat")])
def test_a_run_with_a_damaged_config_says_so(trained, tmp_path, capsys, command, edit, words):
    # An edited or damaged config.json (input_size "x") was a TypeError traceback from inside the model.
    import shutil

    data, run = trained
    bad = tmp_path / "bad"
    shutil.copytree(run, bad, ignore=shutil.ignore_patterns("checkpoint.safetensors", "tensorboard"))
    info = json.loads((bad / "config.json").read_text())
    for key, value in edit.items():
        (info if key == "classes" else info["config"])[key] = value
    (bad / "config.json").write_text(json.dumps(info))
    argv = ["classify"] + [a.format(bad=bad, tmp=tmp_path, img=data / "test" / "red" / "0.png") for a in command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "config.json is damaged" in err and words in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "m.onnx").exists()


def test_evaluate_warns_when_the_hold_out_is_drawn_from_a_changed_folder(tmp_path, capsys):
    # The hold-out is drawn again at evaluation: with images added since training it is another
    # split, which may hold training images, and nothing said so.
    make_folder(tmp_path / "d", n_train=10, n_test=0, size=8, corrupt=False)
    data = tmp_path / "d" / "train"  # a plain class folder: --val-split hold-out
    run = tmp_path / "run"
    assert main(["classify", "train", "--data", str(data), "-o", str(run), "--epochs", "1", "--batch-size", "8",
                 "--device", "cpu", "--cache-dir", str(tmp_path / "c"), "--val-split", "0.2", "-q"]) == 0
    capsys.readouterr()
    argv = ["classify", "evaluate", str(run), "--device", "cpu"]
    assert main(argv) == 0
    assert "warning" not in capsys.readouterr().err
    for name in CLASSES:
        Image.new("RGB", (8, 8)).save(data / name / "new.png")
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "the data folder changed since training" in err and "may hold images it trained on" in err


def test_a_run_folder_inside_the_data_is_refused_up_front(tmp_path, capsys):
    # It was read as a class and refused as empty: "add images or remove the folder", advice that
    # the CLI itself undid by making the folder again.
    data = make_folder(tmp_path / "data", corrupt=False)
    out = data / "train" / "run_in"
    assert main(["classify", "train", "--data", str(data), "-o", str(out), "--epochs", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "is inside --data" in err and err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize("xdg", ["abs", "relative", None])
def test_the_default_cache_dir_follows_xdg_cache_home(tmp_path, monkeypatch, xdg):
    # train and lr-find (which shares the default) cache decoded images under $XDG_CACHE_HOME/convscope
    # when it is an absolute path, else under ~/.cache/convscope; CIFAR-10's default root sits beside them.
    from convscope.classify.cifar10 import default_cifar10_root

    data = make_folder(tmp_path / "data", n_train=4, n_test=2, corrupt=False)
    home, cache = tmp_path / "home", tmp_path / "xdg"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    if xdg is None:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", str(cache) if xdg == "abs" else "xdg")
    expected = cache / "convscope" if xdg == "abs" else home / ".cache" / "convscope"
    assert main(["classify", "train", "--data", str(data), "-o", str(tmp_path / "run"), "--epochs", "1",
                 "--batch-size", "8", "--device", "cpu", "-q"]) == 0
    assert any((expected / "data").iterdir())
    assert default_cifar10_root() == expected / "cifar10"
    assert not (tmp_path / "xdg" / "convscope").exists() or xdg == "abs"


@pytest.mark.parametrize("flag", ["-o", "--mistakes-figure"])
def test_evaluate_on_the_runs_own_data_keeps_its_images(tmp_path, capsys, flag):
    # Without --data the run's own folder is evaluated, and the check of --data did not see it:
    # `evaluate RUN -o DATA/test/red/0.png` wrote the confusion matrix over one of its images.
    data, run = make_folder(tmp_path / "data", n_train=3, n_test=2, corrupt=False), tmp_path / "run"
    assert main(["classify", "train", "--data", str(data), "-o", str(run), "--epochs", "1", "--batch-size", "4",
                 "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "-q"]) == 0
    capsys.readouterr()
    photo = data / "test" / "red" / "0.png"
    before = photo.read_bytes()
    assert main(["classify", "evaluate", str(run), flag, str(photo), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"{flag} {photo} is one of this run's inputs (an image in {data})" in err
    assert photo.read_bytes() == before and not sidecar_path(photo).exists()


@pytest.mark.parametrize("command", ["train", "lr-find"])
def test_a_batch_of_one_image_for_a_batchnorm_head_is_one_line(tmp_path, capsys, command):
    # vgg19-bn's dense head normalizes over the batch: one image per batch gave BatchNorm's
    # "Expected more than 1 value per channel when training" as a ValueError traceback.
    data = make_folder(tmp_path / "data", n_train=3, n_test=2, size=32, corrupt=False)
    out = tmp_path / "run"
    argv = ["classify", command, "--data", str(data), "--model", "vgg19-bn", "--batch-size", "1",
            "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "-q"]
    argv += ["-o", str(out), "--epochs", "1"] if command == "train" else ["--json", "--steps", "10"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "a batch of 1 image(s)" in err and "--batch-size 2 or more" in err, err
    assert not out.exists()

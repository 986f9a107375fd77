"""Training on tiny synthetic data: the loss goes down, runs resume exactly, checkpoints are safe."""

from __future__ import annotations

import math

import pytest
import torch

from convscope.classify.config import TrainConfig
from convscope.classify.data import DataSplits, ImageData
from convscope.classify.run import RunDir, RunError
from convscope.errors import ConfigError
from convscope.classify.infer import _shifted, tta_logits
from convscope.classify.optim import lr_factor
from convscope.classify.train import train


def blobs(n: int, seed: int, size: int = 16) -> ImageData:
    """Three classes: a bright square in the red, green or blue channel, at a random place."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 60, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % 3
    for i in range(n):
        r, c = torch.randint(0, size - 6, (2,), generator=g).tolist()
        images[i, labels[i], r:r + 6, c:c + 6] = 230
    return ImageData(images, labels, ["red", "green", "blue"], None, [])


def splits(n_train=96, n_val=48, size=16) -> DataSplits:
    return DataSplits(blobs(n_train, 0, size), blobs(n_val, 1, size), "synthetic", "test")


def config(**kw) -> TrainConfig:
    return TrainConfig(**{"model": "simple", "epochs": 3, "batch_size": 16, "input_size": 16, "device": "cpu",
                          **kw})


def test_simple_model_learns(tmp_path):
    result = train(splits(), config(epochs=4), RunDir(tmp_path / "run"))
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.7 * losses[0]
    assert result.val_acc > 0.6  # chance is 1/3
    assert (tmp_path / "run" / "model.safetensors").exists() and (tmp_path / "run" / "metrics.csv").exists()


def test_resume_ends_where_an_uninterrupted_run_would(tmp_path):
    full = train(splits(), config(epochs=3, flip=True, translate=2), RunDir(tmp_path / "full"))
    part = train(splits(), config(epochs=2, flip=True, translate=2), RunDir(tmp_path / "part"))
    assert part.history == [{**r, "seconds": p["seconds"]} for r, p in zip(full.history[:2], part.history)]
    resumed = train(splits(), config(epochs=3, flip=True, translate=2), RunDir(tmp_path / "part"), resume=True)
    assert len(resumed.history) == 3
    for a, b in zip(full.history, resumed.history):
        assert a["train_loss"] == b["train_loss"] and a["val_acc"] == b["val_acc"]


def test_ema_and_label_smoothing_and_schedules(tmp_path):
    result = train(splits(), config(ema=0.9, label_smoothing=0.1, optimizer="sgd", lr=0.05, schedule="onecycle",
                                    warmup=1), RunDir(tmp_path / "r"))
    assert all(math.isfinite(r["val_loss"]) for r in result.history)
    resumed = train(splits(), config(ema=0.9, label_smoothing=0.1, optimizer="sgd", lr=0.05, schedule="onecycle",
                                     warmup=1, epochs=4), RunDir(tmp_path / "r"), resume=True)
    assert len(resumed.history) == 4


def test_lr_schedules():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(100, 100, 0, "cosine") == pytest.approx(0.0)
    assert lr_factor(60, 100, 0, "step") == 0.1 and lr_factor(80, 100, 0, "step") == 0.01
    assert lr_factor(30, 100, 0, "onecycle") == pytest.approx(1.0)


def test_transfer_head_on_cached_bottleneck_features(tmp_path):
    cache = tmp_path / "cache"
    cfg = config(model="transfer:vgg19", input_size=32, epochs=3, batch_size=16, hidden=(32,))
    result = train(splits(size=32), cfg, RunDir(tmp_path / "t"), cache_dir=cache)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert len(list(cache.iterdir())) == 2  # train and val features, computed once
    saved = (tmp_path / "t" / "model.safetensors").stat().st_size
    assert saved < 1_000_000  # the frozen VGG19 is not copied into the run


def test_finetune_trains_the_last_blocks(tmp_path):
    cfg = config(model="transfer:vgg19", input_size=32, epochs=1, batch_size=16, hidden=(32,), finetune=1)
    result = train(splits(size=32), cfg, RunDir(tmp_path / "f"))
    assert len(result.history) == 1
    with pytest.raises(Exception, match="finetune"):
        train(splits(size=32), config(finetune=1), RunDir(tmp_path / "g"))


def test_run_dir_refuses_to_mix(tmp_path):
    with pytest.raises(RunError, match="not a run folder"):
        RunDir(tmp_path).info()


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "does not describe a convscope classifier run"),  # was AttributeError: 'list' ... 'get'
    ('{"kind": "convscope-classifier", "classes": "abc"}', "classes are not a list"),  # was classes a, b, c
])
def test_run_dir_with_a_damaged_config(tmp_path, text, message):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(RunError, match=message):
        RunDir(tmp_path).info()


def test_snapshots_record_feature_evolution(tmp_path):
    from convscope.classify.run import load_tensors

    run = RunDir(tmp_path / "s")
    train(splits(), config(epochs=2, snapshots=True), run)
    tensors, meta = load_tensors(run.file("snapshots.safetensors"))
    assert meta["epochs"] == [1, 2] and tensors["1.filters"].shape == (32, 3, 3, 3)
    assert not torch.equal(tensors["1.filters"], tensors["2.filters"])  # the filters learn
    assert run.file("feature_evolution.png").exists()
    train(splits(), config(epochs=3, snapshots=True), run, resume=True)
    assert load_tensors(run.file("snapshots.safetensors"))[1]["epochs"] == [1, 2, 3]


def test_a_kill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    """Simulate kill -9 in the middle of writing: the temp file is abandoned, the old file stays whole."""
    import os

    import os as os_mod

    run = RunDir(tmp_path / "k")
    train(splits(), config(epochs=1), run)
    before = run.file("checkpoint.safetensors").read_bytes()

    def killed(src, dst):
        raise KeyboardInterrupt  # dies between writing the temp file and the rename

    monkeypatch.setattr(os_mod, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        train(splits(), config(epochs=2), run, resume=True)
    monkeypatch.undo()
    assert run.file("checkpoint.safetensors").read_bytes() == before
    assert not [p for p in os.listdir(run.path) if p.startswith(".")]  # no temp file left
    resumed = train(splits(), config(epochs=2), run, resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2]


def test_api_resume_with_another_recipe_is_refused_and_more_epochs_are_not(tmp_path):
    # Only the CLI compared a resumed run's options with its config.json: through the API a resumed
    # run went on with another learning rate while config.json still named the first.
    run = RunDir(tmp_path / "run")
    train(splits(), config(epochs=1), run)
    before = run.file("checkpoint.safetensors").read_bytes()
    with pytest.raises(ConfigError, match=r"was trained with --lr 1\.0, not --lr 0\.5; resume with the run's"):
        train(splits(), config(epochs=2, lr=0.5), run, resume=True)
    assert run.file("checkpoint.safetensors").read_bytes() == before
    resumed = train(splits(), config(epochs=2), run, resume=True)  # epochs may change
    assert [r["epoch"] for r in resumed.history] == [1, 2]


def test_resume_refuses_other_classes_and_a_run_without_its_checkpoint(tmp_path):
    # A class renamed since (the same number of classes) went on training with its labels shuffled
    # under config.json's old names; with the checkpoint deleted (to save space), resume started over
    # and replaced the trained model.
    run = RunDir(tmp_path / "run")
    train(splits(), config(epochs=1), run)
    checkpoint, model = run.file("checkpoint.safetensors"), run.file("model.safetensors")
    before = checkpoint.read_bytes(), model.read_bytes()
    renamed = splits()
    for part in (renamed.train, renamed.val):
        part.classes = ["red", "green", "teal"]
    with pytest.raises(RunError, match=r"trained on other classes than the data has now \(new: teal; gone: blue\)"):
        train(renamed, config(epochs=2), run, resume=True)
    assert (checkpoint.read_bytes(), model.read_bytes()) == before
    checkpoint.unlink()
    with pytest.raises(RunError, match="has model.safetensors but no checkpoint.safetensors"):
        train(splits(), config(epochs=2), run, resume=True)
    assert model.read_bytes() == before[1] and len(run.file("metrics.csv").read_text().splitlines()) == 2


def test_resume_records_the_new_epochs_and_refuses_fewer_than_trained(tmp_path):
    # config.json said the first command's --epochs after a resume had extended the run; --epochs
    # below what the checkpoint holds ended at once, reporting the epochs it had not been asked for.
    import json

    run = RunDir(tmp_path / "run")
    train(splits(), config(epochs=2), run)
    with pytest.raises(RunError, match=r"has trained 2 epochs already; --epochs 1 cannot undo them"):
        train(splits(), config(epochs=1), run, resume=True)
    assert json.loads(run.file("config.json").read_text())["config"]["epochs"] == 2
    result = train(splits(), config(epochs=3, precision="fp32"), run, resume=True)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    info = json.loads(run.file("config.json").read_text())
    assert info["config"]["epochs"] == 3
    assert info["run"]["arithmetic"] == "fp32"  # the resume's arithmetic, recorded as --epochs is
    assert train(splits(), config(epochs=3), run, resume=True).epochs_run == 3  # (finished: nothing to do)


def test_tta_views_move_and_average():
    x = torch.zeros(1, 1, 6, 6)
    x[0, 0, 2, 3] = 1.0
    assert _shifted(x, 1, 1)[0, 0, 3, 4] == 1.0 and _shifted(x, 1, 1).sum() == 1.0
    assert _shifted(x, -1, -1)[0, 0, 1, 2] == 1.0
    edge = torch.arange(6.0).repeat(6, 1)[None, None]  # columns 0..5: the uncovered column repeats the edge
    assert torch.equal(_shifted(edge, 0, 1)[0, 0, 0], torch.tensor([0.0, 0, 1, 2, 3, 4]))

    class MaxPerChannel(torch.nn.Module):  # unchanged by mirroring and by 1 px edge-repeating shifts
        def forward(self, v):
            return v.amax(dim=(2, 3))

    class LeftMinusRight(torch.nn.Module):  # mirroring negates it
        def forward(self, v):
            half = v.shape[-1] // 2
            return v[..., :half].sum(dim=(2, 3)) - v[..., half:].sum(dim=(2, 3))

    imgs = torch.nn.functional.pad(torch.rand(4, 3, 6, 6), (1, 1, 1, 1))  # a 1 px zero frame: shifts lose nothing
    for mode in ("none", "flip", "shift"):
        assert torch.allclose(tta_logits(MaxPerChannel(), imgs, mode), imgs.amax(dim=(2, 3)))
    plain = tta_logits(LeftMinusRight(), imgs, "none")
    assert plain.abs().max() > 0.1
    assert tta_logits(LeftMinusRight(), imgs, "flip").abs().max() < 1e-5
    with pytest.raises(ConfigError, match="test-time augmentation"):
        tta_logits(MaxPerChannel(), imgs, "rotate")


def test_a_run_trained_through_the_api_can_be_loaded_and_is_never_overwritten(tmp_path, monkeypatch):
    from convscope.classify import train as train_module
    from convscope.classify.predict import load_run

    train(splits(), config(epochs=1), str(tmp_path / "run"))        # a path is a RunDir (was AttributeError)
    loaded = load_run(tmp_path / "run")                             # was RunError: no config.json
    assert loaded.classes == ["red", "green", "blue"] and loaded.input_size == 16
    with monkeypatch.context() as m:  # refused before the model is built (a transfer run's feature pass)
        m.setattr(train_module, "prepare", lambda *a, **k: pytest.fail("built a model for a refused run"))
        with pytest.raises(RunError, match="resume=True"):          # was silently trained over
            train(splits(), config(epochs=1), RunDir(tmp_path / "run"))
        with pytest.raises(ConfigError, match="was trained with --lr 1.0"):
            train(splits(), config(epochs=2, lr=0.5), RunDir(tmp_path / "run"), resume=True)
    assert len(train(splits(), config(epochs=2), RunDir(tmp_path / "run"), resume=True).history) == 2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not empty"):
        train(splits(), config(epochs=1), RunDir(tmp_path / "other"))


@pytest.mark.parametrize("args, kwargs, word", [
    (("synthetic", config(), "r"), {}, "splits"),                  # AttributeError before
    ((splits(), {"model": "simple"}, "r"), {}, "TrainConfig(**d)"),
    ((splits(), config(), 3), {}, "run"),
    ((splits(), config(), "r"), {"callback": 3}, "callback"),     # TypeError at the first step before
    ((splits(), config(), "r"), {"resume": "yes"}, "resume"),
    ((splits(), config(), "r"), {"cache_dir": 3}, "cache_dir"),
    ((splits(), config(model=None), "r"), {}, "--model"),         # AttributeError before
    ((splits(), config(hidden=128), "r"), {}, "--hidden"),        # TypeError before
    ((splits(), config(channels_last="no"), "r"), {}, "--channels-last"),  # ran with it on before
    ((splits(), config(optimizer="sgd", momentum=None), "r"), {}, "--momentum"),
    ((splits(), config(input_size=8), "r"), {}, "load_data(..., size=8)"),  # shape mismatch in matmul before
])
def test_train_refuses_arguments_it_cannot_use(tmp_path, monkeypatch, args, kwargs, word):
    monkeypatch.chdir(tmp_path)
    with pytest.raises((ConfigError, RunError)) as e:
        train(*args, **kwargs)
    assert word in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "r" / "model.safetensors").exists()


def test_predict_images_takes_paths_and_images_and_checks_its_numbers(tmp_path):
    from PIL import Image

    from convscope.classify.predict import load_run, predict_images

    train(splits(), config(epochs=1), RunDir(tmp_path / "run"))
    r = load_run(str(tmp_path / "run"), device="cpu")
    Image.new("RGB", (20, 12), (200, 10, 10)).save(tmp_path / "x.png")
    one = predict_images(r.model, r.classes, tmp_path / "x.png", r.input_size, "cpu")  # one Path: TypeError before
    many = predict_images(r.model, r.classes, [Image.open(tmp_path / "x.png").convert("L"), torch.rand(1, 3, 9, 1),
                                               str(tmp_path / "x.png")], r.input_size, "cpu")  # TypeError before
    assert len(one) == 1 and one[0].path == str(tmp_path / "x.png") and len(many) == 3
    assert many[0].path == "<image 0>" and many[0].actual is None
    for kw, word in [(dict(top=0), "top"), (dict(batch=0), "batch"), (dict(top=1.5), "top")]:  # torch errors before
        with pytest.raises(ConfigError, match=word):
            predict_images(r.model, r.classes, [tmp_path / "x.png"], r.input_size, "cpu", **kw)
    with pytest.raises(ConfigError, match="r.model"):
        predict_images(r, r.classes, [tmp_path / "x.png"], r.input_size, "cpu")
    with pytest.raises(ConfigError, match="class names"):     # was silently wrong (or IndexError)
        predict_images(r.model, ["a", "b"], [tmp_path / "x.png"], r.input_size, "cpu")
    with pytest.raises(ConfigError, match="device"):           # RuntimeError before
        load_run(tmp_path / "run", device="gpu")


def test_evaluate_and_as_net_check_their_arguments(tmp_path):
    from convscope.classify.predict import as_net, evaluate, load_run

    train(splits(), config(epochs=1), RunDir(tmp_path / "run"))
    r = load_run(str(tmp_path / "run"), device="cpu")
    u8 = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    assert evaluate(r, u8, torch.tensor([0, 1]), "cpu").count == 2
    for args, word in [((r, u8.float(), torch.tensor([0, 1])), "images_u8 must be a uint8"),  # NotImplementedError
                       ((r, u8, torch.tensor([0, 5])), "class indices from 0 to 2"),       # RuntimeError
                       ((r, u8, [0, 1]), "labels must be an int64 tensor"),               # AttributeError
                       ((r, u8[:0], torch.tensor([], dtype=torch.long)), "no images"),    # IndexError
                       ((str(tmp_path / "run"), u8, torch.tensor([0, 1])), "LoadedRun")]:  # AttributeError
        with pytest.raises(ConfigError, match=word):
            evaluate(*args, "cpu")
    with pytest.raises(ConfigError, match="LoadedRun"):  # AttributeError
        as_net(r.model)


def test_evaluate_checks_ks_and_always_reports_top_1(tmp_path):
    # ks=() was "ValueError: max() arg is an empty sequence", (0,) an IndexError, (1.5,) a TypeError,
    # None a TypeError; and ks without 1, or a k above the classes (top-5 of 3), a KeyError: 1.
    from convscope.classify.predict import evaluate, load_run

    train(splits(24, 12), config(epochs=1), RunDir(tmp_path / "run"))
    r = load_run(str(tmp_path / "run"), device="cpu")
    u8, labels = splits(24, 12).val.images, splits(24, 12).val.labels
    full = evaluate(r, u8, labels, "cpu")
    for ks in [(3,), (10,), [2, 1]]:
        ev = evaluate(r, u8, labels, "cpu", ks=ks)
        assert ev.accuracy == full.accuracy and set(ev.top_k) == {k for k in ks if k <= 3}
    for ks in [(), (0,), (1.5,), None, "ab", (True,), (-1,)]:
        with pytest.raises(ConfigError, match="^ks must be a list of whole numbers"):
            evaluate(r, u8, labels, "cpu", ks=ks)


@pytest.mark.parametrize("backbone", ["vgg19", "efficientnet_lite0"])
def test_snapshots_of_a_finetuned_transfer_model(tmp_path, backbone):
    # Was IndexError (auto found no block: the backbone runs inside the model), then KeyError (the
    # backbone's own HookedNet caught the stop of the snapshot's early-stopped forward).
    from convscope.classify.run import load_tensors

    run = RunDir(tmp_path / "s")
    cfg = config(model=f"transfer:{backbone}", input_size=32, epochs=2, hidden=(16,), finetune=1, snapshots=True)
    train(splits(n_train=24, n_val=6, size=32), cfg, run)
    tensors, meta = load_tensors(run.file("snapshots.safetensors"))
    assert meta["epochs"] == [1, 2] and meta["layer"].startswith("backbone.")
    assert not torch.equal(tensors["1.activations"], tensors["2.activations"])  # a block that trains
    assert run.file("feature_evolution.png").exists()


def test_snapshots_auto_layer_is_one_that_learns(tmp_path):
    # resnet-fast's first block is its fixed patch whitening: auto recorded maps that never changed.
    from convscope.classify.run import load_tensors

    run = RunDir(tmp_path / "s")
    train(splits(n_train=32, n_val=6), config(model="resnet-fast", epochs=1, snapshots=True), run)
    assert load_tensors(run.file("snapshots.safetensors"))[1]["layer"] == "stage1"


def test_resume_options_compare_resolved_values_and_let_snapshots_start():
    import json

    from convscope.classify.config import check_resume_options

    saved = json.loads(json.dumps(TrainConfig(model="transfer:vgg19").resolved().to_dict()))  # as config.json
    check_resume_options(saved, TrainConfig(model="transfer:vgg19", hidden=[512, 256]), "RUN")  # a list: the same
    # Snapshots may start on resume, at a layer of the user's choosing ...
    check_resume_options(saved, TrainConfig(model="transfer:vgg19", snapshots=True, snapshot_layer="x"), "RUN")
    # ... but a run that has them keeps its layer (the figure would mix two).
    with pytest.raises(ConfigError, match="--snapshot-layer auto, not --snapshot-layer x"):
        check_resume_options({**saved, "snapshots": True},
                             TrainConfig(model="transfer:vgg19", snapshots=True, snapshot_layer="x"), "RUN")
    # ... and a resume without them names no layer (--snapshot-layer alone is refused: it records nothing).
    check_resume_options({**saved, "snapshots": True, "snapshot_layer": "x"}, TrainConfig(model="transfer:vgg19"),
                         "RUN")
    # A run from before an option existed trained at its default: resuming with another is refused
    # (it went through, and config.json never said so).
    older = {k: v for k, v in saved.items() if k not in ("class_weights", "keep")}
    check_resume_options(older, TrainConfig(model="transfer:vgg19"), "RUN")
    with pytest.raises(ConfigError, match="--class-weights none, not --class-weights balanced"):
        check_resume_options(older, TrainConfig(model="transfer:vgg19", class_weights="balanced"), "RUN")


def test_an_api_run_on_a_folder_records_it_and_evaluates_on_its_hold_out(tmp_path, monkeypatch, capsys):
    # TrainConfig.data stayed "cifar10" in an API run on a folder: `classify evaluate RUN` then
    # tried to download CIFAR-10 instead of scoring the run's own hold-out.
    import json

    from convscope.classify.data import load_data
    from convscope.cli import main

    from test_classify_cli import make_folder

    folder = make_folder(tmp_path / "data", n_train=8, corrupt=False) / "train"  # class folders, no split
    loaded = load_data(str(folder), size=16, val_split=0.25, seed=3)
    train(loaded, config(epochs=1, seed=3, val_split=0.1), RunDir(tmp_path / "run"))
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["config"]["data"] == str(folder.resolve()) and saved["config"]["val_split"] == 0.25
    assert saved["run"]["val_images"] == len(loaded.val)
    monkeypatch.chdir(tmp_path / "data")
    assert main(["classify", "evaluate", str(tmp_path / "run"), "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == len(loaded.val)

    with pytest.raises(ConfigError, match="seed"):       # evaluation would draw another hold-out
        train(loaded, config(epochs=1, seed=4), RunDir(tmp_path / "r2"))
    with pytest.raises(ConfigError, match="other data"):
        train(loaded, config(epochs=1, seed=3, data=str(tmp_path)), RunDir(tmp_path / "r3"))


@pytest.mark.parametrize("model, lr, which", [("simple", 1e12, "training"), ("resnet-fast", 1e6, "validation")])
def test_a_diverged_run_is_an_error_not_a_saved_epoch(tmp_path, model, lr, which):
    # resnet-fast at --lr 1e6 kept a finite training loss while BatchNorm's running statistics made
    # every validation logit nan: the epoch was saved and the run ended with exit 0.
    from convscope.errors import NumericalError

    run = RunDir(tmp_path / "run")
    with pytest.raises(NumericalError, match=f"the {which} loss became (nan|inf) in epoch 1; lower --lr"):
        train(splits(n_train=32, n_val=16), config(model=model, lr=lr, epochs=1, batch_size=8, precision="fp32"), run)
    assert not run.file("model.safetensors").exists()

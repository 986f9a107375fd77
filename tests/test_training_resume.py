"""Training as a user drives it: resuming (same images, same epochs logged, equal DDP shards), refusals, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import convscope.nets
from convscope.cli import main
from convscope.errors import ConfigError
from convscope.fast.config import TrainStyleConfig
from convscope.fast.models import ARBITRARY_KIND, save_model
from convscope.fast.nets import Decoder
from convscope.fast.train import TrainingError, checkpoint_path, preview_folder, train_arbitrary, train_style
from netcache import cached_get_net

NETS: dict = {}


@pytest.fixture(autouse=True)
def shared_vgg(monkeypatch):
    monkeypatch.setattr(convscope.nets, "get_net", cached_get_net(convscope.nets.get_net, NETS))


def _image(path, seed, w=48, h=40):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).resize((w, h), Image.Resampling.BICUBIC).save(path)


@pytest.fixture()
def folders(tmp_path):
    content, styles = tmp_path / "photos", tmp_path / "paintings"
    content.mkdir()
    styles.mkdir()
    for i in range(4):
        _image(content / f"{i}.png", i, 48 + 4 * i)
    for i in range(2):
        _image(styles / f"{i}.png", 10 + i, 64, 64)
    _image(tmp_path / "style.png", 20, 64, 64)
    _image(tmp_path / "other.png", 21, 64, 64)
    return content, styles, tmp_path / "style.png", tmp_path / "other.png"


def _config(**kw) -> TrainStyleConfig:
    base = dict(size=32, batch_size=2, steps=6, style_size=64, widths=(4, 8, 8), residual_blocks=1,
                preview_every=0, checkpoint_every=2, device="cpu", precision="fp32")
    return TrainStyleConfig(**{**base, **kw})


def _stop_at(step):
    def callback(p):
        if p.step == step:
            raise KeyboardInterrupt

    return callback


def test_resume_refuses_another_style_image_or_content_folder(folders, tmp_path):
    content, _, style, other = folders
    out = tmp_path / "m.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train_style(style, content, out, _config(), callback=_stop_at(3))
    with pytest.raises(TrainingError, match=r"\(the style image changed\)"):
        train_style(other, content, out, _config(), resume=True)
    _image(content / "new.png", 7)
    with pytest.raises(TrainingError, match="content folder.s images changed"):
        train_style(style, content, out, _config(), resume=True)
    (content / "new.png").unlink()
    # A renamed copy of the same style image and a moved content folder are the same run.
    (tmp_path / "copy.png").write_bytes(style.read_bytes())
    moved = content.rename(tmp_path / "moved")
    assert train_style(tmp_path / "copy.png", moved, out, _config(), resume=True).steps == 6


def test_resume_of_arbitrary_refuses_another_style_folder(folders, tmp_path):
    content, styles, _, other = folders
    out = tmp_path / "d.safetensors"
    config = dict(size=32, batch_size=2, steps=4, widths=(8, 8, 8), preview_every=0, checkpoint_every=2,
                  device="cpu", precision="fp32")
    from convscope.fast.config import TrainArbitraryConfig

    with pytest.raises(KeyboardInterrupt):
        train_arbitrary(content, styles, out, TrainArbitraryConfig(**config), callback=_stop_at(3))
    (styles / "extra.png").write_bytes(other.read_bytes())
    with pytest.raises(TrainingError, match="style folder.s images changed"):
        train_arbitrary(content, styles, out, TrainArbitraryConfig(**config), resume=True)


def test_output_inside_the_content_folder_does_not_train_on_its_own_previews(folders):
    content, _, style, _ = folders
    out, full = content / "m.safetensors", content.parent / "full.safetensors"
    config = _config(preview_every=1)
    train_style(style, content, full, config)  # first: other runs' previews in the folder would be content
    with pytest.raises(KeyboardInterrupt):
        train_style(style, content, out, config, callback=_stop_at(3))
    assert len(list(preview_folder(out).glob("*.png"))) == 2  # the callback comes before the preview
    # The previews written so far are not content images: the run resumes (same image list) and
    # ends as an uninterrupted run would.
    train_style(style, content, out, config, resume=True)
    from safetensors.torch import load_file

    a, b = load_file(out), load_file(full)
    assert all((a[k] == b[k]).all() for k in a)


def test_absurd_style_size_is_refused_before_it_exhausts_memory():
    with pytest.raises(ConfigError, match="--style-size must be at most 4096"):
        _config(style_size=100_000).validate()


def test_init_of_another_arbitrary_architecture_names_only_its_options(folders, tmp_path, capsys):
    content, styles, _, _ = folders
    init = save_model(tmp_path / "dec.safetensors", ARBITRARY_KIND, Decoder((8, 8, 8)), {})
    assert main(["train-arbitrary", "--content-dir", str(content), "--style-dir", str(styles), "--size", "32",
                 "--batch-size", "2", "--steps", "1", "--widths", "8", "8", "4", "--device", "cpu", "-q",
                 "--init", str(init), "-o", str(tmp_path / "a.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "(--widths 8 8 8) differs from this training's (--widths 8 8 4)" in err
    assert "--residual-blocks" not in err and "{" not in err
    assert not checkpoint_path(tmp_path / "a.safetensors").exists()


# ---- classify train ----------------------------------------------------------------------------
def _class_folder(root, n=8, size=8):
    rng = np.random.default_rng(0)
    for ci, name in enumerate(("blue", "green", "red")):
        (root / name).mkdir(parents=True)
        for i in range(n):
            a = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            a[2:6, 2:6, ci] = 230
            Image.fromarray(a).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize("epochs, metrics_short", [(3, False), (2, True)])
def test_outputs_a_kill_cut_short_of_a_checkpoint_are_made_whole(tmp_path, monkeypatch, epochs, metrics_short):
    # A kill between epoch 2's checkpoint and its TensorBoard scalars (metrics.csv and the event file
    # are written after the checkpoint) lost that epoch from TensorBoard for good: the resumed run
    # starts after it. When epoch 2 is the last (and metrics.csv lacked its row too), the resume
    # has no epoch left to run, and nothing wrote them at all.
    import glob

    from convscope.classify import train as train_module
    from convscope.classify.curves import read_metrics
    from convscope.classify.run import RunDir
    from convscope.errors import UserError
    from convscope.tbevents import read_scalars

    data, run = _class_folder(tmp_path / "data"), tmp_path / "run"
    real = train_module.train

    def killed_after_checkpoint_2(*a, callback=None, **k):
        def spy(r):
            if r.done and r.epoch == 2:  # checkpointed, not yet reported
                raise UserError("killed here by the test")
            callback(r)
        return real(*a, callback=spy, **k)

    base = ["classify", "train", "--data", str(data), "-o", str(run), "--epochs", str(epochs), "--batch-size", "8",
            "--device", "cpu", "--cache-dir", str(tmp_path / "c"), "-q"]
    monkeypatch.setattr(train_module, "train", killed_after_checkpoint_2)
    assert main(base) == 2
    monkeypatch.setattr(train_module, "train", real)
    if metrics_short:
        RunDir(run).write_metrics(read_metrics(RunDir(run))[:1])
    assert main(base + ["--resume"]) == 0
    assert sorted(s for f in glob.glob(str(run / "tensorboard" / "*")) for s, tag, _ in read_scalars(f)
                  if tag == "val_acc") == list(range(1, epochs + 1))
    assert [row["epoch"] for row in read_metrics(RunDir(run))] == list(range(1, epochs + 1))


def test_ddp_shards_give_every_process_the_same_number_of_steps(tmp_path, monkeypatch):
    # Under torchrun, 51 training images on 2 processes with --batch-size 13 made shards of 26 and
    # 25 images: 2 steps on rank 0, 1 on rank 1 (drop_last), and rank 0 waited forever in its
    # second gradient all-reduce. Each rank is run here alone, with the process group faked.
    import torch

    from convscope.classify import distributed
    from convscope.classify import setup as setup_module
    from convscope.classify import train as train_module
    from convscope.classify.config import TrainConfig
    from convscope.classify.data import load_data

    data = _class_folder(tmp_path / "data", n=16)
    (data / "red" / "15.png").unlink()
    splits = load_data(str(data), size=32, val_split=0.1, seed=0)
    assert len(splits.train) == 41  # 21 and 20 per rank before the fix: 3 and 2 steps of 7
    steps = {}

    class Loader(setup_module.DeviceLoader):
        def __len__(self):
            steps[rank] = super().__len__()
            return steps[rank]

    monkeypatch.setattr(setup_module, "DeviceLoader", Loader)
    monkeypatch.setattr(distributed, "setup", lambda world, device: device)
    monkeypatch.setattr(distributed, "all_sum", lambda world, *v: list(v))
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", lambda model, **k: model)
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "from_env", lambda: distributed.World(rank, 2, rank))
        config = TrainConfig(data=str(data), model="simple", epochs=1, batch_size=7, device="cpu")
        train_module.train(splits, config, tmp_path / f"run{rank}")
    assert steps[0] == steps[1] == 3
    index = [distributed.shard(distributed.World(r, 2), 41) for r in (0, 1)]
    assert len(index[0]) == len(index[1]) == 21 and set(torch.cat(index).tolist()) == set(range(41))


def test_resume_clears_the_temp_files_a_kill_left_mid_write(folders, tmp_path):
    # kill -9 during a write leaves ".checkpoint.safetensors.<hex>.tmp" (or the model's, metrics'),
    # and nothing ever removed them.
    content, _, style, _ = folders
    out = tmp_path / "m.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train_style(style, content, out, _config(), callback=_stop_at(3))
    litter = [tmp_path / ".m.safetensors.0123456789ab.tmp", tmp_path / f".{checkpoint_path(out).name}.00aa11bb22cc.tmp"]
    others = [tmp_path / ".notes.txt.0123456789ab.tmp", tmp_path / ".m.safetensors.tmp"]  # not ours
    for p in litter + others:
        p.write_bytes(b"half")
    assert train_style(style, content, out, _config(), resume=True).steps == 6
    assert not any(p.exists() for p in litter) and all(p.exists() for p in others)

    data, run = _class_folder(tmp_path / "data"), tmp_path / "run"
    base = ["classify", "train", "--data", str(data), "-o", str(run), "--epochs", "1", "--batch-size", "8",
            "--device", "cpu", "--cache-dir", str(tmp_path / "c"), "-q"]
    assert main(base) == 0
    (run / ".metrics.csv.abcdef012345.tmp").write_bytes(b"half")
    assert main([*base[:7], "2", *base[8:], "--resume"]) == 0
    assert not (run / ".metrics.csv.abcdef012345.tmp").exists()


def test_the_api_clears_temps_on_resume_and_refuses_a_run_inside_its_data(tmp_path):
    from dataclasses import replace

    from convscope.classify.config import TrainConfig
    from convscope.classify.data import load_data
    from convscope.classify.train import train
    from convscope.errors import ConfigError

    data = _class_folder(tmp_path / "data")
    splits = load_data(str(data), size=32, val_split=0.2, seed=0)
    config = TrainConfig(model="simple", epochs=1, batch_size=8, device="cpu")
    train(splits, config, tmp_path / "run")
    (tmp_path / "run" / ".checkpoint.safetensors.abcdef012345.tmp").write_bytes(b"half")
    train(splits, replace(config, epochs=2), tmp_path / "run", resume=True)
    assert not (tmp_path / "run" / ".checkpoint.safetensors.abcdef012345.tmp").exists()
    with pytest.raises(ConfigError, match="inside --data"):
        train(splits, config, data / "run_in")

"""Feed-forward style transfer: networks, training, model files, one-pass stylization, CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from PIL import Image

import convscope.nets
from convscope import images
from convscope.cli import main
from convscope.errors import ConfigError, ImageError, UserError
from convscope.fast import catalog as fast_catalog
from convscope.fast import models as fast_models
from convscope.fast.apply import ArbitraryStylizer, FastConfig, FastStylizer
from convscope.fast.config import TrainArbitraryConfig, TrainStyleConfig
from convscope.fast.models import ARBITRARY_KIND, STYLE_KIND, ModelError, load_model, save_model
from convscope.fast.nets import (LITE_WIDTHS, Decoder, HalfResTransformerNet, InstanceNorm, LiteAdaIN, LiteEncoder,
                                 TransformerNet, adain, channel_stats, grow_into, reduced_instance_norm,
                                 space_to_depth_conv_weight, subpixel_upconv_weight)
from convscope.fast.train import TrainingError, checkpoint_path, train_arbitrary, train_style
from convscope.optimize import WARM_START_FIRST_STEP
from netcache import cached_get_net

NETS: dict = {}


@pytest.fixture(autouse=True)
def shared_vgg(monkeypatch):
    monkeypatch.setattr(convscope.nets, "get_net", cached_get_net(convscope.nets.get_net, NETS))


def _photo(w=48, h=40, seed=0) -> Image.Image:
    """A smooth random 'photo': blobs of colour, so crops differ and content losses mean something."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)


def _stripes(size=64) -> Image.Image:
    x = np.arange(size)
    arr = np.zeros((size, size, 3), np.uint8)
    arr[..., 0] = ((x[None, :] // 4) % 2) * 255
    arr[..., 2] = ((x[:, None] // 6) % 2) * 200
    return Image.fromarray(arr)


@pytest.fixture()
def folders(tmp_path):
    content = tmp_path / "photos"
    content.mkdir()
    for i in range(6):
        _photo(48 + 4 * i, 40, seed=i).save(content / f"{i}.jpg")
    styles = tmp_path / "paintings"
    styles.mkdir()
    _stripes().save(styles / "a.png")
    _photo(64, 64, seed=9).save(styles / "b.png")
    style = tmp_path / "style.png"
    _stripes().save(style)
    return content, styles, style


def tiny_style_config(**kw) -> TrainStyleConfig:
    base = dict(size=32, batch_size=2, steps=12, lr=1e-2, style_size=64, widths=(4, 8, 8), residual_blocks=1,
                preview_every=0, checkpoint_every=4, device="cpu", precision="fp32")
    return TrainStyleConfig(**{**base, **kw})


def tiny_arbitrary_config(**kw) -> TrainArbitraryConfig:
    base = dict(size=32, batch_size=2, steps=12, lr=1e-3, widths=(8, 8, 8), preview_every=0, checkpoint_every=4,
                device="cpu", precision="fp32")
    return TrainArbitraryConfig(**{**base, **kw})


def tiny_lite_config(**kw) -> TrainArbitraryConfig:
    return tiny_arbitrary_config(**{"encoder": "lite", "encoder_widths": (4, 4, 8, 8), **kw})


def tiny_lite_file(path, widths=(8, 8, 8), encoder_widths=(4, 4, 8, 8)):
    torch.manual_seed(0)
    return save_model(path, ARBITRARY_KIND, LiteAdaIN(widths, encoder_widths), {"card": {"painting": "test"}})


def tiny_model_file(path, kind=STYLE_KIND):
    torch.manual_seed(0)
    net = TransformerNet((4, 8, 8), 1) if kind == STYLE_KIND else Decoder((8, 8, 8))
    return save_model(path, kind, net, {"card": {"painting": "test"}})


# ---- networks --------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(301, 199), (17, 33), (64, 64), (5, 7)])
def test_transformer_keeps_any_size_and_range(size):
    net = TransformerNet((4, 8, 8), 1).eval()
    x = torch.rand(2, 3, size[1], size[0])
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape
    assert 0.0 <= float(y.min()) and float(y.max()) <= 1.0


def test_subpixel_and_space_to_depth_weights_reproduce_the_convolutions():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6, 8, dtype=torch.float64)
    w, b = torch.randn(7, 5, 3, 3, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
    plain = F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), w, b, padding=1)
    sub = F.pixel_shuffle(F.conv2d(x, subpixel_upconv_weight(w), b.repeat_interleave(4), padding=1), 2)
    assert torch.allclose(plain, sub, atol=1e-12)
    for k in (3, 5, 9):
        big = torch.randn(2, 4, 12, 10, dtype=torch.float64)
        w = torch.randn(3, 4, k, k, dtype=torch.float64)
        kw = space_to_depth_conv_weight(w)
        s2d = F.pixel_shuffle(F.conv2d(F.pixel_unshuffle(big, 2), kw, padding=kw.shape[-1] // 2), 2)
        assert torch.allclose(F.conv2d(big, w, padding=k // 2), s2d, atol=1e-12), k


@pytest.mark.parametrize("size", [(199, 301), (23, 18), (64, 64)])
def test_half_resolution_network_computes_the_same_function(size):
    torch.manual_seed(1)
    net = TransformerNet((8, 12, 16), residual_blocks=2).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.InstanceNorm2d):  # trained-looking affine norms, not the identity
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
        x = torch.rand(2, 3, *size)
        assert torch.allclose(HalfResTransformerNet(net).eval()(x), net(x), atol=1e-5)


def test_reduced_instance_norm_is_instance_norm():
    torch.manual_seed(2)
    for shape in [(1, 16, 37, 29), (3, 5, 8, 8)]:
        x = torch.randn(*shape, dtype=torch.float64) * 4 + 3
        w, b = torch.rand(shape[1], dtype=torch.float64) + 0.5, torch.randn(shape[1], dtype=torch.float64)
        assert torch.allclose(reduced_instance_norm(x, w, b, 1e-5), F.instance_norm(x, weight=w, bias=b, eps=1e-5),
                              atol=1e-10)
    norm = InstanceNorm(4, affine=True).eval()
    assert set(norm.state_dict()) == set(torch.nn.InstanceNorm2d(4, affine=True).state_dict())
    x = torch.randn(2, 4, 6, 5)
    assert torch.allclose(norm(x), F.instance_norm(x, weight=norm.weight, bias=norm.bias, eps=norm.eps), atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the reduced form runs there only)")
def test_instance_norm_on_a_gpu_takes_the_reduced_form():
    torch.manual_seed(3)
    norm = InstanceNorm(16, affine=True).cuda().eval()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
        x = torch.randn(1, 16, 96, 128, device="cuda") * 2 + 1
        expected = F.instance_norm(x, weight=norm.weight, bias=norm.bias, eps=norm.eps)
        assert torch.allclose(norm(x), expected, atol=1e-4)
        assert torch.allclose(norm(x.bfloat16()).float(), expected, atol=0.1)


def test_fast_stylizer_runs_the_half_resolution_network_on_the_cpu():
    st = FastStylizer("starry_night", FastConfig(device="cpu", precision="fp32"))
    assert isinstance(st.runner, HalfResTransformerNet)
    x = images.pil_to_tensor(_photo(61, 47))
    with torch.no_grad():
        assert torch.allclose(st.tensor(x), st.net(x).clamp(0, 1), atol=1e-5)


def test_adain_matches_target_statistics():
    content, style = torch.randn(2, 8, 9, 11) * 3 + 1, torch.randn(2, 8, 5, 6) * 0.5 - 2
    out = adain(content, *channel_stats(style))
    m, s = channel_stats(out)
    ms, ss = channel_stats(style)
    assert torch.allclose(m, ms, atol=1e-4) and torch.allclose(s, ss, atol=1e-3)


def test_decoder_upsamples_by_eight():
    y = Decoder((8, 8, 8))(torch.randn(1, 512, 5, 7))
    assert y.shape == (1, 3, 40, 56)


# ---- training --------------------------------------------------------------------------------
def _losses(callback_log):
    return [p.losses["loss"] for p in callback_log]


def test_train_style_lowers_loss_and_round_trips(folders, tmp_path):
    content, _, style = folders
    log = []
    out = tmp_path / "m.safetensors"
    result = train_style(style, content, out, tiny_style_config(steps=30), callback=log.append)
    losses = _losses(log)
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])
    model = load_model(str(out), STYLE_KIND)
    assert model.meta["steps"] == 30 and model.meta["config"]["widths"] == [4, 8, 8]
    assert result.steps == 30 and set(result.losses) == {"loss", "content", "style", "tv"}
    # The file holds the trained weights: the same outputs as the net that was trained.
    x = torch.rand(1, 3, 37, 41)
    reloaded = load_model(str(out), STYLE_KIND).net
    with torch.no_grad():
        assert torch.equal(reloaded(x), model.net(x))


def test_train_style_resume_ends_where_an_uninterrupted_run_does(folders, tmp_path):
    content, _, style = folders
    config = tiny_style_config(steps=8, checkpoint_every=3)
    full = tmp_path / "full.safetensors"
    train_style(style, content, full, config)

    part = tmp_path / "part.safetensors"

    def stop_at_5(p):
        if p.step == 5:
            raise KeyboardInterrupt  # after the checkpoint at step 3

    with pytest.raises(KeyboardInterrupt):
        train_style(style, content, part, config, callback=stop_at_5)
    assert checkpoint_path(part).exists()
    train_style(style, content, part, config, resume=True)
    a = load_model(str(full), STYLE_KIND).net.state_dict()
    b = load_model(str(part), STYLE_KIND).net.state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_train_refuses_to_overwrite_and_checks_resume(folders, tmp_path):
    content, _, style = folders
    out = tmp_path / "m.safetensors"
    train_style(style, content, out, tiny_style_config(steps=2))
    with pytest.raises(TrainingError, match="already exists"):
        train_style(style, content, out, tiny_style_config(steps=2))
    # The message names what differs (not just "a different configuration") and, for a longer run,
    # points to --init.
    with pytest.raises(TrainingError, match=r"--steps: checkpoint 2, now 3\).*--init") as info:
        train_style(style, content, out, tiny_style_config(steps=3), resume=True)
    assert "--lr" not in str(info.value)
    with pytest.raises(TrainingError, match=r"--lr: checkpoint 0\.01, now 0\.001\)") as info:
        train_style(style, content, out, tiny_style_config(steps=2, lr=0.001), resume=True)
    assert "--init" not in str(info.value)
    with pytest.raises(TrainingError, match="nothing to resume"):
        train_style(style, content, tmp_path / "new.safetensors", tiny_style_config(steps=2), resume=True)
    (tmp_path / "dir.checkpoint.safetensors").mkdir()  # (it said the checkpoint "does not exist")
    with pytest.raises(TrainingError, match="dir.checkpoint.safetensors is a folder, not a checkpoint"):
        train_style(style, content, tmp_path / "dir.safetensors", tiny_style_config(steps=2), resume=True)


def test_resuming_a_finished_run_whose_model_was_deleted_writes_it_back(folders, tmp_path):
    # It returned (the CLI: "wrote m.safetensors", exit 0) with no model file there.
    content, _, style = folders
    out = tmp_path / "m.safetensors"
    train_style(style, content, out, tiny_style_config(steps=2))
    before = load_model(str(out), STYLE_KIND)
    out.unlink()
    result = train_style(style, content, out, tiny_style_config(steps=2), resume=True)
    assert result.path == out and out.is_file()
    after = load_model(str(out), STYLE_KIND)
    a, b = before.net.state_dict(), after.net.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_file_where_the_previews_go_is_refused_before_training(folders, tmp_path, capsys):
    # mkdir's FileExistsError traceback at the first preview, after the steps before it were lost.
    content, _, style = folders
    out = tmp_path / "m.safetensors"
    (tmp_path / "m_previews").write_bytes(b"mine")
    with pytest.raises(TrainingError, match="m_previews, where the previews go, is a file"):
        train_style(style, content, out, tiny_style_config(steps=2, preview_every=1))
    assert (tmp_path / "m_previews").read_bytes() == b"mine" and not out.exists()
    assert main(["train-style", str(style), "--content-dir", str(content), "--size", "32", "--steps", "1",
                 "--batch-size", "1", "--device", "cpu", "-q", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and len(err.strip().splitlines()) == 1
    train_style(style, content, out, tiny_style_config(steps=2, preview_every=0))  # none written: no matter


def test_train_refuses_an_output_another_process_is_training(folders, tmp_path):
    from convscope.runlock import BusyError, exclusive, lock_beside

    content, _, style = folders
    out = tmp_path / "m.safetensors"
    # A holder in this process counts as the same process (runlock is re-entrant), so hold the lock
    # the way another process would: a separate open file with its own lock.
    import fcntl

    with open(lock_beside(out), "w") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        with pytest.raises(BusyError, match=f"the training output {out} is being written by another"):
            train_style(style, content, out, tiny_style_config(steps=2))
    assert not out.exists() and not checkpoint_path(out).exists()
    with exclusive(lock_beside(out), "x"):
        pass  # released: the next run may go
    train_style(style, content, out, tiny_style_config(steps=2))
    assert out.exists() and not lock_beside(out).exists()


def test_cli_train_refuses_a_busy_output_before_loading_anything(folders, tmp_path, monkeypatch, capsys):
    import fcntl

    from convscope.runlock import lock_beside

    content, _, style = folders
    out = tmp_path / "m.safetensors"

    def no_loading(*a, **k):
        raise AssertionError("a network was loaded for a run that cannot start")

    monkeypatch.setattr(convscope.nets, "get_net", no_loading)
    with open(lock_beside(out), "w") as other:  # held as another process would hold it
        fcntl.flock(other, fcntl.LOCK_EX)
        code = main(["train-style", str(style), "--content-dir", str(content), "-o", str(out), "--steps", "2",
                     "--size", "32", "--device", "cpu", "-q"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert f"the training output {out} is being written by another training process" in err, err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_train_style_init_starts_from_a_trained_model(folders, tmp_path):
    content, _, style = folders
    first = tmp_path / "first.safetensors"
    train_style(style, content, first, tiny_style_config(steps=4))
    start = load_model(str(first), STYLE_KIND).net.state_dict()
    # lr ~0: the continued model's weights are the initial model's (fp32 file; a random start differs)
    again = tmp_path / "again.safetensors"
    train_style(style, content, again, tiny_style_config(steps=1, lr=1e-12, init=str(first)))
    after = load_model(str(again), STYLE_KIND).net.state_dict()
    assert all(torch.allclose(start[k], after[k], atol=1e-6) for k in start)
    fresh = tmp_path / "fresh.safetensors"
    train_style(style, content, fresh, tiny_style_config(steps=1, lr=1e-12))
    assert not torch.allclose(load_model(str(fresh), STYLE_KIND).net.state_dict()["layers.conv1.conv.weight"],
                              start["layers.conv1.conv.weight"])


@pytest.mark.parametrize("widths, blocks", [((4, 8, 8), 3), ((6, 8, 12), 1), ((5, 9, 16), 4)])
def test_grown_network_computes_the_same_images_and_can_learn(widths, blocks):
    torch.manual_seed(0)
    small = TransformerNet((4, 8, 8), 1)
    for p in small.parameters():  # trained-looking weights: norms that are not the identity
        p.data.add_(0.1 * torch.randn_like(p))
    large = TransformerNet(widths, blocks)
    grow_into(small, large)
    x = torch.rand(2, 3, 37, 29)
    for mode in (True, False):
        small.train(mode), large.train(mode)
        torch.testing.assert_close(large(x), small(x), atol=1e-5, rtol=1e-5)
    # every new weight gets a gradient (nothing stuck at zero for good)
    large.train()
    (large(x) - 0.5).square().mean().backward()
    if blocks > 1:
        assert getattr(large.layers, f"res{blocks}").block2.norm.weight.grad.abs().sum() > 0
    if widths[2] > 8:  # the zeroed weights from the new channels into the old ones
        assert large.layers.up1.block.conv.weight.grad[:, 8:].abs().sum() > 0
    with pytest.raises(ValueError, match="cannot grow"):
        grow_into(large, small)


def test_train_style_init_grows_a_smaller_model(folders, tmp_path):
    content, _, style = folders
    first = tmp_path / "first.safetensors"
    train_style(style, content, first, tiny_style_config(steps=2))
    grown = tmp_path / "grown.safetensors"
    train_style(style, content, grown, tiny_style_config(steps=1, lr=1e-12, init=str(first), widths=(4, 8, 12),
                                                         residual_blocks=3))
    a, b = load_model(str(first), STYLE_KIND).net, load_model(str(grown), STYLE_KIND).net
    assert b.widths == (4, 8, 12) and b.residual_blocks == 3
    x = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(b(x), a(x), atol=1e-4, rtol=1e-4)


def test_cli_train_init_of_another_architecture_or_kind_is_refused(folders, tmp_path, capsys):
    content, styles, style = folders
    init = tiny_model_file(tmp_path / "init.safetensors")  # widths 4 8 8, one residual block
    argv = ["train-style", str(style), "--content-dir", str(content), "--size", "32", "--batch-size", "2",
            "--steps", "1", "--style-size", "64", "--device", "cpu", "-q", "--init", str(init)]
    # narrower than the model at one stage, or fewer residual blocks: no way to keep its function
    assert main([*argv, "--widths", "2", "8", "8", "--residual-blocks", "1", "-o", str(tmp_path / "a.safetensors")]) == 2
    assert "architecture" in capsys.readouterr().err
    assert not (tmp_path / "a.safetensors").exists()
    init0 = save_model(tmp_path / "init0.safetensors", STYLE_KIND, TransformerNet((4, 8, 8), 2), {})
    assert main([*argv[:-1], str(init0), "--widths", "4", "8", "8", "--residual-blocks", "1",
                 "-o", str(tmp_path / "a.safetensors")]) == 2
    assert "architecture" in capsys.readouterr().err
    decoder = tiny_model_file(tmp_path / "dec.safetensors", ARBITRARY_KIND)
    assert main([*argv[:-1], str(decoder), "-o", str(tmp_path / "b.safetensors")]) == 2
    assert "arbitrary-style decoder" in capsys.readouterr().err
    assert main([*argv, "--widths", "4", "8", "8", "--residual-blocks", "1", "-o", str(tmp_path / "c.safetensors")]) == 0


def _no_vgg(*args, **kwargs):
    raise AssertionError("VGG19 loaded before a refusal that needs no network")


@pytest.mark.parametrize("command", ["train-style", "train-arbitrary"])
def test_cli_train_refuses_a_bad_init_before_loading_data_or_vgg(command, folders, tmp_path, capsys, monkeypatch):
    # Was: --init checked after the content images and VGG19 loaded (seconds to say "unknown style
    # model"), with the hint of `stylize` ("use --method arbitrary for it"), which train-style has not.
    content, styles, style = folders
    monkeypatch.setattr(convscope.nets, "get_net", _no_vgg)
    monkeypatch.setattr(convscope.fast.train, "CropSampler", _no_vgg)
    other = (tiny_model_file(tmp_path / "dec.safetensors", ARBITRARY_KIND) if command == "train-style"
             else tiny_model_file(tmp_path / "ff.safetensors", STYLE_KIND))
    head = ([command, str(style), "--content-dir", str(content)] if command == "train-style" else
            [command, "--content-dir", str(content), "--style-dir", str(styles)])
    out = tmp_path / "new.safetensors"
    for init, expected in (("starry_nigth" if command == "train-style" else "adain-lit", "unknown style model"),
                           (str(other), "is needed here")):
        assert main([*head, "-o", str(out), "--device", "cpu", "-q", "--init", init]) == 2
        err = capsys.readouterr().err
        assert expected in err and "--method" not in err and "--model" not in err, err
        assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_train_style_says_when_the_style_image_is_too_thin_for_its_layers(folders, tmp_path):
    # Was "a 4x64 image is too small for layer relu5_1 of vgg19": neither the style image nor
    # --style-size named, and a size the user never saw (the image as resized).
    content, _, _ = folders
    thin = tmp_path / "thin.png"
    _photo(3, 48).save(thin)
    with pytest.raises(ImageError, match=r"the style image at --style-size 64 is 4x64, under the 16 px a side .*"
                                         r"larger --style-size"):
        train_style(thin, content, tmp_path / "m.safetensors", tiny_style_config())


def test_a_training_checkpoint_given_as_a_model_says_which_file_to_use(folders, tmp_path, capsys, monkeypatch):
    # Was: "does not hold the weights its header describes (RuntimeError: Error(s) in loading
    # state_dict for TransformerNet:)" for OUT.checkpoint.safetensors, the file beside the model.
    content, _, style = folders
    out = tmp_path / "m.safetensors"
    train_style(style, content, out, tiny_style_config(steps=1, checkpoint_every=1))
    ckpt = checkpoint_path(out)
    with pytest.raises(ModelError, match=f"training checkpoint .*not a model.*beside it: {out}$"):
        load_model(str(ckpt), STYLE_KIND)
    with pytest.raises(ModelError, match="training checkpoint"):
        load_model(str(ckpt))
    photo = tmp_path / "photo.png"
    _photo(40, 32).save(photo)
    for argv in (["stylize", str(photo), "--model", str(ckpt), "-o", str(tmp_path / "o.png")],
                 ["train-style", str(style), "--content-dir", str(content), "--init", str(ckpt),
                  "-o", str(tmp_path / "n.safetensors")]):
        monkeypatch.setattr(convscope.nets, "get_net", _no_vgg)  # train-style: refused before VGG19 loads
        assert main([*argv, "-q"]) == 2
        assert f"training checkpoint (what --resume continues from), not a model; give the model file written " \
               f"beside it: {out}" in capsys.readouterr().err


@pytest.mark.parametrize("stop_at", [1, 3])
def test_cli_train_ctrl_c_says_whether_there_is_anything_to_resume(stop_at, folders, tmp_path, monkeypatch, capsys):
    import convscope.fast.train as train_mod

    content, _, style = folders
    real = train_mod._write_preview
    count = {"n": 0}

    def pressed(*a, **kw):  # previews every step: Ctrl-C arrives after step `stop_at`
        count["n"] += 1
        if count["n"] == stop_at:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(train_mod, "_write_preview", pressed)
    out = tmp_path / "m.safetensors"
    argv = ["train-style", str(style), "--content-dir", str(content), "-o", str(out), "--size", "32",
            "--batch-size", "2", "--steps", "4", "--widths", "4", "8", "8", "--residual-blocks", "1",
            "--style-size", "64", "--preview-every", "1", "--checkpoint-every", "2", "--device", "cpu", "-q"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    if stop_at == 1:  # before the first checkpoint: nothing to resume, and the message must not say there is
        assert not checkpoint_path(out).exists() and "nothing saved" in err and "continue with --resume" not in err
    else:
        assert checkpoint_path(out).exists() and "continue with --resume" in err
        assert "(step 2)" in err  # which step the checkpoint holds
        assert main([*argv, "--resume"]) == 0


def test_cli_train_bar_starts_at_the_first_step(folders, tmp_path, capsys):
    # The bar was drawn before the inputs were checked: an error printed between two empty bars.
    # A resumed run's bar counted the resumed steps as this process's (6.6 step/s for 2).
    content, _, style = folders
    out = tmp_path / "m.safetensors"
    argv = ["train-style", str(style), "--content-dir", str(content), "-o", str(out), "--size", "32",
            "--batch-size", "2", "--steps", "2", "--widths", "4", "8", "8", "--residual-blocks", "1",
            "--style-size", "64", "--checkpoint-every", "2", "--device", "cpu"]
    assert main([*argv[:3], str(tmp_path / "empty"), *argv[4:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("convscope: error:") and "train:" not in err
    assert main(argv) == 0
    capsys.readouterr()
    argv[argv.index("--steps") + 1] = "3"
    assert main([*argv, "--resume", "--checkpoint-every", "3"]) == 2  # other options: refused, bar-free
    assert "train:" not in capsys.readouterr().err

    from types import SimpleNamespace

    from convscope.commands.fast_style import _TrainBar

    bar = _TrainBar(10)
    bar(SimpleNamespace(step=7, losses={"style": 1.0}))  # the first step of a run resumed at step 6
    bar(SimpleNamespace(step=8, losses={"style": 0.9}))
    assert (bar.bar.n, bar.bar.initial) == (8, 7)  # the rate counts the steps timed: from 7, not from 0
    bar.close()


def test_train_init_help_fits_each_trainer():
    # train-arbitrary has no --residual-blocks: its --init help must not offer to grow them.
    from dataclasses import fields

    def init_help(cls):
        return next(f.metadata["help"] for f in fields(cls) if f.name == "init")

    assert "--residual-blocks" in init_help(TrainStyleConfig)
    assert "--residual-blocks" not in init_help(TrainArbitraryConfig)
    assert "decoder" in init_help(TrainArbitraryConfig)


def test_train_arbitrary_lowers_loss(folders, tmp_path):
    content, styles, _ = folders
    log = []
    out = tmp_path / "dec.safetensors"
    train_arbitrary(content, styles, out, tiny_arbitrary_config(steps=25, lr=3e-3), callback=log.append)
    losses = _losses(log)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert load_model(str(out), ARBITRARY_KIND).meta["kind"] == ARBITRARY_KIND


def test_unreadable_training_images_are_skipped_and_counted(folders, tmp_path):
    content, _, style = folders
    (content / "broken.jpg").write_bytes(b"not a jpeg at all")
    result = train_style(style, content, tmp_path / "m.safetensors", tiny_style_config(steps=20, batch_size=4))
    assert result.skipped_images == 1


# ---- model files -----------------------------------------------------------------------------
def test_model_file_errors(tmp_path):
    with pytest.raises(ModelError, match="unknown style model 'starry_nigth'.*starry_night"):
        load_model("starry_nigth", STYLE_KIND)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(ModelError, match="damaged or not a convscope model"):
        load_model(str(bad), STYLE_KIND)
    dec = tiny_model_file(tmp_path / "dec.safetensors", ARBITRARY_KIND)
    with pytest.raises(ModelError, match="arbitrary-style decoder.*--method arbitrary"):
        load_model(str(dec), STYLE_KIND)
    with pytest.raises(ModelError, match="not found"):
        load_model(str(tmp_path / "missing.safetensors"), STYLE_KIND)


@pytest.mark.parametrize("header, message", [
    ("[1, 2]", "not a JSON object"),                                                 # was AttributeError
    ({"arch": {"widths": [-4, 8, 8], "residual_blocks": 1}}, "widths must be 3"),     # was a torch RuntimeError
    ({"arch": {"widths": [0, 8, 8], "residual_blocks": 1}}, "widths must be 3"),
    ({"arch": {"widths": [4, 8, 100000], "residual_blocks": 1}}, "from 1 to 1024"),   # many GB before any check
    ({"arch": {"widths": [4, 8, 8], "residual_blocks": 10**6}}, "residual blocks"),   # built for minutes
    ({"arch": {"widths": [4, 8, 8], "residual_blocks": True}}, "residual blocks"),
    # within the bounds, but ~600M weights on a tiny file: refused before anything is allocated
    ({"arch": {"widths": [1024, 1024, 1024], "residual_blocks": 64}}, "more than its .* bytes can hold"),
])
def test_damaged_model_header_is_a_model_error(tmp_path, header, message):
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    text = header if isinstance(header, str) else json.dumps({"kind": STYLE_KIND, **header})
    save_file({"x": torch.zeros(2)}, str(path), metadata={"convscope": text})
    with pytest.raises(ModelError, match=message) as caught:
        load_model(str(path), STYLE_KIND)
    assert str(path) in str(caught.value)  # which file is damaged


def test_builtin_models_are_small_fp16_with_cards():
    names = fast_models.builtin_names(STYLE_KIND)
    assert len(names) >= 4 and fast_models.builtin_names(ARBITRARY_KIND) == ["adain", "adain-lite"]
    for name in [*names, "adain", "adain-lite"]:
        path = fast_models.builtin_folder() / f"{name}.safetensors"
        assert path.stat().st_size < 8 * 2 ** 20
        meta = fast_models.read_header(path)
        card = meta["card"]
        for key in ("painting", "description", "data", "steps", "seconds", "final_losses"):
            assert card.get(key), (name, key)
        from safetensors.torch import load_file

        assert {t.dtype for t in load_file(str(path)).values()} == {torch.float16}


# ---- stylizing -------------------------------------------------------------------------------
def test_fast_stylizer_sizes_strength_and_colour(tmp_path):
    path = tiny_model_file(tmp_path / "m.safetensors")
    content = _photo(301, 199)
    out = FastStylizer(str(path), FastConfig(device="cpu"))(content)
    assert out.size == (301, 199)
    same = FastStylizer(str(path), FastConfig(device="cpu", strength=0.0))(content)
    assert np.abs(np.asarray(same, int) - np.asarray(content, int)).max() <= 1
    resized = FastStylizer(str(path), FastConfig(device="cpu", size=150))(content)
    assert max(resized.size) == 150
    lum = FastStylizer(str(path), FastConfig(device="cpu", preserve_color="luminance", precision="fp32"))(content)
    # Luminance transfer keeps the content's chroma: its I/Q channels follow the content's closely.
    from convscope.colour import rgb_to_yiq

    iq = rgb_to_yiq(images.pil_to_tensor(lum))[:, 1:]
    iq_c = rgb_to_yiq(images.pil_to_tensor(content))[:, 1:]
    assert float((iq - iq_c).abs().mean()) < 0.02


def test_arbitrary_alpha_zero_gives_the_content_back():
    content = images.load_image(_sample_photo())
    content = images.resize_long_side(content, 160)
    style = _stripes(128)
    s = ArbitraryStylizer("adain", FastConfig(device="cpu", precision="fp32", alpha=0.0))
    out = s(content, [style])
    assert out.size == content.size
    err = np.abs(np.asarray(out, float) - np.asarray(content, float)).mean() / 255
    styled = ArbitraryStylizer("adain", FastConfig(device="cpu", precision="fp32"))(content, [style])
    err_styled = np.abs(np.asarray(styled, float) - np.asarray(content, float)).mean() / 255
    assert err < 0.1 and err < 0.6 * err_styled



def test_an_option_of_the_other_method_is_refused_not_ignored():
    # FastStylizer ran with alpha and style_size set, ArbitraryStylizer with strength, and said nothing.
    for stylizer, config, name in ((FastStylizer, FastConfig(device="cpu", alpha=0.5), "alpha"),
                                   (FastStylizer, FastConfig(device="cpu", style_size=256), "style_size"),
                                   (ArbitraryStylizer, FastConfig(device="cpu", strength=0.5), "strength")):
        with pytest.raises(ConfigError) as e:
            stylizer("starry_night" if stylizer is FastStylizer else "adain", config)
        assert f"FastConfig.{name} is for" in str(e.value) and "\n" not in str(e.value)

def _sample_photo():
    from convscope.demo import sample_photo_path

    return sample_photo_path()


def test_arbitrary_blend_and_mask():
    content = images.resize_long_side(images.load_image(_sample_photo()), 96)
    red = Image.new("RGB", (64, 64), (220, 30, 30))
    blue = Image.new("RGB", (64, 64), (30, 30, 220))
    s = ArbitraryStylizer("adain", FastConfig(device="cpu", precision="fp32"))
    x = images.pil_to_tensor(content)
    only_red = s.tensor(x, [red, blue], [1.0, 0.0])
    assert torch.allclose(only_red, s.tensor(x, [red]), atol=1e-5)
    mask = Image.new("L", content.size, 0)
    mask.paste(255, (content.width // 2, 0, content.width, content.height))
    split = s.tensor(x, [red, blue], mask=mask)[0]
    half = content.width // 2
    left, right = split[:, :, :half - 8], split[:, :, half + 8:]
    # black -> first style (red), white -> last (blue)
    assert float(left[0].mean() - left[2].mean()) > float(right[0].mean() - right[2].mean()) + 0.03
    with pytest.raises(ConfigError, match="two or more styles"):  # one style: the mask would do nothing
        s.tensor(x, [red], mask=mask)
    # A mask drawn at another resolution is stretched to the content; one of another shape is refused
    # (it was stretched too, putting the regions in the wrong places without a word).
    small = mask.resize((content.width // 3, content.height // 3), Image.Resampling.NEAREST)
    assert small.size != mask.size and s.tensor(x, [red, blue], mask=small).shape == split[None].shape
    for odd in (mask.transpose(Image.Transpose.TRANSPOSE), mask.resize((content.width, content.height * 2))):
        with pytest.raises(ConfigError, match=r"^the mask is \d+x\d+ and the content image \d+x\d+: their shapes"):
            s.tensor(x, [red, blue], mask=odd)


@pytest.mark.parametrize("size, content, style, message", [
    # --size shrank a large enough content: the option is to blame, not the image (it said "the
    # content image is 1x1")
    (1, (48, 40), (64, 64), "--size 1 makes the content image c.png 1x1: the arbitrary method needs at least 8 "
                            "pixels a side; use --size 9 or more"),
    (100, (4000, 10), (64, 64), "--size 100 makes the content image c.png 100x0: "),
    (100, (40000, 10), (64, 64), "--size 100 makes the content image c.png 100x0: the arbitrary method needs at "
                                 "least 8 pixels a side; use --size 0 (its own size)"),
    # the content itself is too small or too thin
    (0, (4, 3), (64, 64), "the content image c.png is 4x3: the arbitrary method needs at least 8 pixels a side; "
                          "use a larger image (or --size 10 or more to enlarge it)"),
    (5, (4, 3), (64, 64), "the content image c.png is 4x3 (5x4 at --size 5): "),
    (0, (4000, 1), (64, 64), "the content image c.png is 4000x1: the arbitrary method needs at least 8 pixels a "
                             "side; use a less elongated image"),
    # a thin style image is named (it was a resize error naming no file, or VGG's traceback)
    (0, (48, 40), (4000, 1), "the style image thin.png (4000x1) is too elongated or small: at --style-size 512 it "
                             "is 512x0, and the arbitrary method needs at least 8 pixels a side; use a less "
                             "elongated image"),
    (0, (48, 40), (4000, 40), "the style image thin.png (4000x40) is too elongated or small: at --style-size 512 it "
                              "is 512x5, and the arbitrary method needs at least 8 pixels a side; use --style-size "
                              "750 or more"),
])
def test_arbitrary_says_what_is_too_small(size, content, style, message):
    s = ArbitraryStylizer(config=FastConfig(size=size, device="cpu", precision="fp32"))
    with pytest.raises(UserError) as err:
        s(_photo(*content), [_stripes(), _photo(*style)], labels=["c.png", "s.png", "thin.png"])
    assert str(err.value).startswith(message)
    # A content image at fault is an ImageError (a folder run skips it); an option or a style, not.
    at_fault = message.startswith("the content image")
    assert isinstance(err.value, ImageError) == at_fault and isinstance(err.value, ConfigError) != at_fault


@pytest.mark.parametrize("which", ["content", "style"])
def test_arbitrary_on_an_empty_image_is_a_one_line_error(which):
    s = ArbitraryStylizer(config=FastConfig(size=64, device="cpu", precision="fp32"))
    empty = Image.new("RGB", (0, 0))
    content, style = (empty, _stripes()) if which == "content" else (_photo(), empty)
    with pytest.raises(ImageError, match=rf"^the {which} image \S+ is empty \(0x0\)$"):
        s(content, [style], labels=["c.png", "s.png"])


def test_arbitrary_without_labels_numbers_the_style_images():
    s = ArbitraryStylizer(config=FastConfig(device="cpu", precision="fp32"))
    with pytest.raises(ConfigError, match=r"^the style image 2 \(4000x1\) is too elongated"):
        s.tensor(images.pil_to_tensor(_photo()), [_stripes(), Image.new("RGB", (4000, 1))])


def test_one_pass_stylizers_take_paths_tensors_and_one_style(tmp_path):
    _photo().save(tmp_path / "c.png")
    _stripes().save(tmp_path / "s.png")
    fast = FastStylizer(str(tiny_model_file(tmp_path / "m.safetensors")), FastConfig(device="cpu"))
    by_path = fast(tmp_path / "c.png")  # was AttributeError: 'PosixPath' object has no attribute 'load'
    assert by_path.tobytes() == fast(_photo()).tobytes()
    assert fast(images.pil_to_tensor(_photo())).size == (48, 40)
    s = ArbitraryStylizer(config=FastConfig(device="cpu", precision="fp32"))
    listed = s(_photo(), [_stripes()])
    for content, styles in ((str(tmp_path / "c.png"), _stripes()), (_photo(), tmp_path / "s.png"),
                            (_photo(), [images.pil_to_tensor(_stripes())])):
        assert s(content, styles).tobytes() == listed.tobytes()


def test_one_pass_bad_arguments_are_one_line_user_errors(tmp_path):
    fast = FastStylizer(str(tiny_model_file(tmp_path / "m.safetensors")), FastConfig(device="cpu"))
    s = ArbitraryStylizer(config=FastConfig(device="cpu", precision="fp32"))
    x = images.pil_to_tensor(_photo())
    for call, error, words in (
            (lambda: fast(Image.new("RGB", (0, 0))), ImageError, "empty"),
            (lambda: fast(np.asarray(_photo())), ImageError, "fromarray"),
            (lambda: fast.tensor(x[0]), ImageError, "unsqueeze"),
            (lambda: s.tensor((x * 255).byte(), [_stripes()]), ImageError, "float"),
            (lambda: s(_photo(), [_stripes(), _stripes()], weights=[float("nan"), 1]), ConfigError, "finite"),
            (lambda: s(_photo(), [_stripes()], weights=1), ConfigError, "list of finite numbers"),
            (lambda: FastStylizer("starry_night", {"size": 64}), ConfigError, "must be a FastConfig"),
            (lambda: FastConfig(size=1.5).validate(), ConfigError, "whole number"),
            (lambda: FastConfig(alpha="x").validate(), ConfigError, "--alpha must be a number"),
            (lambda: FastConfig(device=None).validate() and ArbitraryStylizer(config=FastConfig(device=None)),
             ConfigError, "device must be")):
        with pytest.raises(error, match=words) as info:
            call()
        assert "\n" not in str(info.value)


def test_cli_arbitrary_names_the_option_or_the_file_at_fault(tmp_path, capsys):
    content, style, thin = tmp_path / "c.png", tmp_path / "s.png", tmp_path / "thin.png"
    _photo().save(content)
    _stripes().save(style)
    Image.new("RGB", (4000, 1), (20, 200, 20)).save(thin)
    out = tmp_path / "o.png"
    for styles, options, message in [([style], ["--size", "1"], "--size 1 makes the content image c.png 1x1"),
                                     ([thin], [], "the style image thin.png (4000x1) is too elongated")]:
        argv = ["stylize", str(content), *map(str, styles), "--method", "arbitrary", *options, "-o", str(out), "-q"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and not out.exists()


# ---- one-pass start of the optimization (stylize --method gatys --init fast[:MODEL]) -----------
def _gatys(init: str, iterations: int, content, style, **kw):
    from convscope.style.config import StyleConfig
    from convscope.style.gatys import stylize_images

    config = StyleConfig(**{"size": 48, "iterations": iterations, "init": init, "device": "cpu", **kw})
    return stylize_images(content, [style], config)


def _max_pixel_difference(a: Image.Image, b: Image.Image) -> int:
    assert a.size == b.size
    return int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())


@pytest.mark.parametrize("kind", [STYLE_KIND, ARBITRARY_KIND])
def test_gatys_fast_init_starts_from_the_one_pass_result(tmp_path, kind):
    # One iteration from the one-pass result: its first step moves no pixel by more than the
    # warm start's bound (it does lower the loss, so the best image seen is the moved one).
    content, style = _photo(60, 50), _stripes()
    path = tiny_model_file(tmp_path / "m.safetensors", kind)
    config = FastConfig(size=48, device="cpu")
    one_pass = (FastStylizer(str(path), config)(content) if kind == STYLE_KIND
                else ArbitraryStylizer(str(path), config)(content, [style]))
    start = _gatys(f"fast:{path}", 1, content, style).image
    assert start.size == one_pass.size == (48, 40)
    assert _max_pixel_difference(start, one_pass) <= 2 + round(255 * WARM_START_FIRST_STEP)
    assert _max_pixel_difference(start, _gatys("content", 1, content, style).image) > 20


def test_gatys_from_the_builtin_one_pass_model_starts_lower_and_stays_lower():
    content, style = _photo(120, 100), _stripes(128)
    fast, plain = _gatys("fast", 6, content, style, size=64), _gatys("content", 6, content, style, size=64)
    assert fast.history[0]["style"] < 0.95 * plain.history[0]["style"]
    assert fast.losses["loss"] < plain.losses["loss"]
    assert fast.losses["loss"] < fast.history[0]["loss"]  # and it still optimizes from there


@pytest.mark.parametrize("init, message", [
    ("fast:", "needs a model after the colon"),
    ("fast:starry_nigth", "did you mean"),
    ("fast:BADFILE", "damaged or not a convscope model"),
])
def test_cli_gatys_fast_init_bad_input(tmp_path, capsys, init, message):
    content, style, out = tmp_path / "c.png", tmp_path / "s.png", tmp_path / "o.png"
    _photo().save(content)
    _stripes().save(style)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nonsense")
    argv = ["stylize", str(content), str(style), "--init", init.replace("BADFILE", str(bad)), "--size", "48",
            "--iterations", "2", "--device", "cpu", "-o", str(out), "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


# ---- CLI -------------------------------------------------------------------------------------
def test_cli_stylize_with_a_model_file_and_folder(tmp_path, capsys):
    path = tiny_model_file(tmp_path / "m.safetensors")
    src = tmp_path / "in"
    src.mkdir()
    _photo(51, 37).save(src / "a.jpg")
    _photo(40, 60, seed=3).save(src / "b.png")
    (src / "c.jpg").write_bytes(b"broken")
    assert main(["stylize", str(src / "a.jpg"), "--model", str(path), "-o", str(tmp_path / "o.png"), "-q"]) == 0
    assert Image.open(tmp_path / "o.png").size == (51, 37)
    meta = json.loads((tmp_path / "o.json").read_text())
    assert meta["config"]["method"] == "fast"
    # what ran: device and precision resolved, and no option only the arbitrary method uses
    assert meta["config"]["device"] == "cpu" and meta["config"]["precision"] in ("bf16", "fp32")
    assert "alpha" not in meta["config"] and "style_size" not in meta["config"]
    assert main(["stylize", str(src), "--model", str(path), "-o", str(tmp_path / "outs")]) == 0
    assert sorted(p.name for p in (tmp_path / "outs").glob("*.png")) == ["a.png", "b.png"]
    assert "skipped 1 unreadable" in capsys.readouterr().err


def test_cli_stylize_a_folder_of_sub_folders_says_they_are_not_read(tmp_path, capsys):
    # "no images in FOLDER" said nothing of the images in its sub-folders.
    path = tiny_model_file(tmp_path / "m.safetensors")
    (tmp_path / "in" / "cats").mkdir(parents=True)
    _photo(20, 20).save(tmp_path / "in" / "cats" / "a.png")
    assert main(["stylize", str(tmp_path / "in"), "--model", str(path), "-o", str(tmp_path / "outs")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no images in" in err and "sub-folders are not read" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "outs").exists()


def test_cli_arbitrary_sidecar_records_the_blend_and_the_mask(tmp_path, capsys):
    content, mask = tmp_path / "c.png", tmp_path / "m.png"
    _photo(40, 32).save(content)
    Image.new("L", (40, 32), 255).save(mask)
    styles = []
    for i, colour in enumerate(((200, 30, 30), (30, 30, 200))):
        styles.append(tmp_path / f"s{i}.png")
        Image.new("RGB", (48, 48), colour).save(styles[-1])
    out = tmp_path / "o.png"
    argv = ["stylize", str(content), *map(str, styles), "--method", "arbitrary", "--decoder", "adain",
            "--device", "cpu", "-q", "-o", str(out)]
    assert main([*argv, "--style-blend", "1", "3"]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["config"]["style_blend"] == [1.0, 3.0] and "strength" not in meta["config"]
    assert meta["config"]["device"] == "cpu" and "mask" not in meta["inputs"]
    assert main([*argv, "--mask", str(mask)]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["inputs"]["mask"] == str(mask) and meta["config"]["style_blend"] is None
    before = out.read_bytes()
    Image.new("L", (32, 40), 255).save(mask)  # the content's shape turned on its side
    assert main([*argv, "--mask", str(mask), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "the mask is 32x40 and the content image c.png 40x32" in err and len(err.splitlines()) == 1, err
    assert out.read_bytes() == before  # the earlier output is untouched


def test_cli_arbitrary_folder_skips_an_image_too_small_for_it(tmp_path, capsys):
    src, style = tmp_path / "in", tmp_path / "s.png"
    src.mkdir()
    _photo(51, 37).save(src / "a.jpg")
    _photo(4, 3).save(src / "tiny.png")  # under the arbitrary method's 8 px a side, at its own size
    _stripes().save(style)
    argv = ["stylize", str(src), str(style), "--method", "arbitrary", "--size", "0", "-o", str(tmp_path / "outs")]
    assert main(argv) == 0
    assert [p.name for p in (tmp_path / "outs").glob("*.png")] == ["a.png"]
    err = capsys.readouterr().err
    assert "skipped" in err and "tiny.png is 4x3" in err
    # a single image of that size is still an error
    assert main(["stylize", str(src / "tiny.png"), str(style), "--method", "arbitrary", "--size", "0",
                 "-o", str(tmp_path / "t.png"), "-q"]) == 2
    assert not (tmp_path / "t.png").exists()


def test_cli_stylize_folder_outputs(tmp_path, capsys):
    path = tiny_model_file(tmp_path / "m.safetensors")
    src = tmp_path / "in"
    src.mkdir()
    _photo(40, 30).save(src / "a.jpg")
    _photo(30, 40, seed=3).save(src / "a.png")  # the same stem: both outputs kept, neither overwritten
    _photo(30, 30, seed=4).save(src / "b.png")
    assert main(["stylize", str(src), "--model", str(path), "-o", str(tmp_path / "outs"), "-q"]) == 0
    outs = tmp_path / "outs"
    assert sorted(p.name for p in outs.glob("*.png")) == ["a_jpg.png", "a_png.png", "b.png"]
    assert Image.open(outs / "a_jpg.png").size == (40, 30) and Image.open(outs / "a_png.png").size == (30, 40)
    capsys.readouterr()
    # -o an existing file, or under one: one line, no traceback (mkdir raised FileExistsError)
    (tmp_path / "afile").write_text("keep")
    for out in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        assert main(["stylize", str(src), "--model", str(path), "-o", str(out), "-q"]) == 2
        err = capsys.readouterr().err
        assert "afile" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "afile").read_text() == "keep"
    # every output checked before the first is written: a folder in the way of the last one
    again = tmp_path / "again"
    (again / "b.png").mkdir(parents=True)
    assert main(["stylize", str(src), "--model", str(path), "-o", str(again), "-q"]) == 2
    assert "folder" in capsys.readouterr().err and sorted(p.name for p in again.iterdir()) == ["b.png"]


def test_cli_failed_folder_run_leaves_no_output_folder_behind(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    _photo(40, 30).save(src / "a.jpg")
    for extra in (["--model", "no_such_style"], [str(tmp_path / "missing.png"), "--method", "arbitrary"]):
        outs = tmp_path / "outs"
        assert main(["stylize", str(src), *extra, "-o", str(outs), "-q"]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not outs.exists()  # the folder it made for its outputs is gone again
    kept = tmp_path / "kept"
    kept.mkdir()  # a folder that was there before stays
    assert main(["stylize", str(src), "--model", "no_such_style", "-o", str(kept), "-q"]) == 2
    assert kept.is_dir()


def test_cli_folder_run_with_no_usable_image_is_an_error(tmp_path, capsys):
    src, outs = tmp_path / "in", tmp_path / "outs"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"broken")
    (src / "b.png").write_bytes(b"")
    assert main(["stylize", str(src), "--model", "starry_night", "-o", str(outs), "-q"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("convscope: error: none of the 2 image(s)") and "a.jpg" in err
    assert not outs.exists()
    # with one usable image the others are skipped, one line each, no blank lines between them (-q: no bar)
    _photo(40, 30).save(src / "c.png")
    assert main(["stylize", str(src), "--model", "starry_night", "-o", str(outs), "-q"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == [line for line in err.splitlines() if line.startswith("skipped ")] and \
        len(err.splitlines()) == 2
    assert sorted(p.name for p in outs.glob("*.png")) == ["c.png"]


@pytest.mark.parametrize("argv, message", [
    (["--model", "starry_nigth"], "did you mean"),
    (["--model", "starry_night", "STYLE"], "give no style images"),
    (["--method", "arbitrary"], "needs at least one style image"),
    (["--model", "starry_night", "--strength", "1.5"], "--strength must be between 0 and 1"),
    (["--method", "arbitrary", "STYLE", "--decoder", "BADFILE"], "damaged or not a convscope model"),
    (["--method", "arbitrary", "STYLE", "--decoder", "FFMODEL"], "feed-forward style network"),
    # an option of another method is refused, not silently ignored
    (["--model", "starry_night", "--iterations", "5"], "--iterations applies to the gatys method only"),
    (["--model", "starry_night", "--style-blend", "1"], "--style-blend applies to --method arbitrary and the gatys"),
    (["--method", "arbitrary", "STYLE", "--strength", "0.5"], "--strength applies to --model only"),
    (["STYLE", "--alpha", "0.5"], "--alpha applies to --method arbitrary only"),
    (["STYLE", "--decoder", "adain"], "--decoder applies to --method arbitrary only"),
    # --strip draws the optimization's iterations: the one-pass methods wrote no strip, exit 0
    (["--model", "starry_night", "--strip"], "--strip applies to the gatys method only"),
    (["--method", "arbitrary", "STYLE", "--strip"], "--strip applies to the gatys method only"),
    (["--method", "arbitrary", "STYLE", "STYLE", "--style-blend", "0", "0"], "must be 0 or more and not all 0"),
])
def test_cli_stylize_bad_input(tmp_path, capsys, argv, message):
    content = tmp_path / "c.png"
    _photo().save(content)
    style = tmp_path / "s.png"
    _stripes().save(style)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nonsense")
    ff = tiny_model_file(tmp_path / "ff.safetensors")
    argv = [{"STYLE": str(style), "BADFILE": str(bad), "FFMODEL": str(ff)}.get(a, a) for a in argv]
    out = tmp_path / "o.png"
    assert main(["stylize", str(content), *argv, "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_builtin_style_and_styles_listing(tmp_path, capsys):
    assert main(["styles"]) == 0
    listing = capsys.readouterr().out
    assert "starry_night" in listing and "adain" in listing
    assert "--decoder adain)" in listing and "arbitrary, the default)" in listing  # how to use each arbitrary one
    assert main(["styles", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["kind"] for r in rows} == {"feed-forward", "arbitrary"}
    content = tmp_path / "c.jpg"
    _photo(301, 199).save(content)
    out = tmp_path / "o.png"
    assert main(["stylize", str(content), "--model", "starry_night", "--preserve-color", "luminance",
                 "-o", str(out), "-q"]) == 0
    assert Image.open(out).size == (301, 199)


def test_cli_train_style_and_export_onnx(folders, tmp_path, capsys):
    pytest.importorskip("onnx")
    content, _, style = folders
    out = tmp_path / "mine.safetensors"
    argv = ["train-style", str(style), "--content-dir", str(content), "-o", str(out), "--size", "32",
            "--batch-size", "2", "--steps", "3", "--widths", "4", "8", "8", "--residual-blocks", "1",
            "--style-size", "64", "--preview-every", "3", "--device", "cpu", "-q"]
    assert main(argv) == 0
    assert out.exists() and list((tmp_path / "mine_previews").glob("step_*.png"))
    assert main(argv) == 2  # exists: needs --resume
    assert "already exists" in capsys.readouterr().err
    onnx_path = tmp_path / "mine.onnx"
    assert main(["export-onnx", "--model", str(out), "-o", str(onnx_path)]) == 0
    err = capsys.readouterr().err
    assert onnx_path.exists() and ("matches PyTorch" in err or "not verified" in err)
    import json

    import onnx

    meta = json.loads({p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}["convscope"])
    assert meta["source"] == "mine.safetensors"  # the file's name, not where this machine keeps it
    assert main(["export-onnx", "--model", str(tmp_path / "nope.safetensors"), "-o", str(onnx_path) + "x.onnx"]) == 2
    capsys.readouterr()
    assert main(["export-onnx", "--model", "adain", "-o", str(tmp_path / "adain.onnx")]) == 2
    err = capsys.readouterr().err
    assert "export-onnx exports feed-forward styles" in err and "--method" not in err
    assert not (tmp_path / "adain.onnx").exists()


def test_cli_train_bad_inputs(tmp_path, capsys):
    style = tmp_path / "s.png"
    _stripes().save(style)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train-style", str(style), "--content-dir", str(empty), "-o", str(tmp_path / "m.safetensors")]) == 2
    assert "no images" in capsys.readouterr().err
    assert main(["train-style", str(style), "--content-dir", str(empty), "-o", str(tmp_path / "m.pt")]) == 2
    assert ".safetensors" in capsys.readouterr().err
    assert main(["train-arbitrary", "--content-dir", str(tmp_path / "nope"), "--style-dir", str(empty),
                 "-o", str(tmp_path / "d.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err


def test_demo_fast_path(tmp_path):
    out = tmp_path / "demo.png"
    assert main(["demo", "--model", "starry_night", "-o", str(out), "-q"]) == 0
    assert Image.open(out).size == Image.open(_sample_photo()).size
    assert json.loads((tmp_path / "demo.json").read_text())["config"]["model"] == "starry_night"


# ---- AdaIN-lite ------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(64, 64), (40, 56), (24, 16)])
def test_lite_encoder_imitates_relu4_1s_shape(size):
    enc = LiteEncoder((4, 4, 8, 8)).eval()
    with torch.no_grad():
        y = enc(torch.rand(2, 3, *size))["relu4_1"]
    assert y.shape == (2, 512, size[0] // 8, size[1] // 8) and float(y.min()) >= 0.0
    # The same input preprocessing as the VGG19 it imitates
    assert type(enc.preprocess) is type(convscope.nets.get_net("vgg19").preprocess)
    assert LiteEncoder().widths == LITE_WIDTHS == TrainArbitraryConfig().encoder_widths


def test_train_lite_lowers_loss_round_trips_and_stylizes(folders, tmp_path):
    content, styles, _ = folders
    log = []
    out = tmp_path / "lite.safetensors"
    result = train_arbitrary(content, styles, out, tiny_lite_config(steps=20, lr=3e-3, mimic_weight=1.0, preview_every=20),
                             callback=log.append)
    losses = _losses(log)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert set(result.losses) == {"loss", "content", "style", "mimic"}
    assert list((tmp_path / "lite_previews").glob("step_*.png"))
    model = load_model(str(out), ARBITRARY_KIND)
    assert isinstance(model.net, LiteAdaIN)
    assert model.net.encoder.widths == (4, 4, 8, 8) and model.net.widths == (8, 8, 8)
    assert model.meta["arch"]["encoder"]["widths"] == [4, 4, 8, 8]
    assert fast_models.arch_of(model.net) == model.meta["arch"]
    st = ArbitraryStylizer(str(out), FastConfig(device="cpu", precision="fp32"))
    assert isinstance(st.encoder, LiteEncoder)
    photo = _photo(61, 37)
    assert st(photo, [_stripes()]).size == (61, 37)
    same = ArbitraryStylizer(str(out), FastConfig(device="cpu", precision="fp32", alpha=0.0))(photo, [_stripes()])
    assert np.abs(np.asarray(same, int) - np.asarray(photo, int)).max() <= 1


def test_train_lite_init_from_a_plain_decoder(folders, tmp_path, capsys):
    content, styles, _ = folders
    dec = tiny_model_file(tmp_path / "dec.safetensors", ARBITRARY_KIND)  # widths 8 8 8
    argv = ["train-arbitrary", "--content-dir", str(content), "--style-dir", str(styles), "--size", "32",
            "--batch-size", "2", "--steps", "1", "--device", "cpu", "-q", "--encoder", "lite",
            "--encoder-widths", "4", "4", "8", "8", "--init", str(dec)]
    assert main([*argv, "-o", str(tmp_path / "a.safetensors")]) == 2  # default decoder widths 128 64 32
    err = capsys.readouterr().err
    assert "decoder widths" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a.safetensors").exists()
    other = tiny_lite_file(tmp_path / "other.safetensors", encoder_widths=(4, 4, 4, 4))
    assert main([*argv[:-1], str(other), "--widths", "8", "8", "8", "-o", str(tmp_path / "b.safetensors")]) == 2
    assert "architecture" in capsys.readouterr().err
    # Same widths: the decoder starts from the file's weights (lr ~0 keeps them)
    out = tmp_path / "c.safetensors"
    assert main([*argv, "--widths", "8", "8", "8", "--lr", "1e-12", "-o", str(out)]) == 0
    start, after = load_model(str(dec), ARBITRARY_KIND).net.state_dict(), load_model(str(out), ARBITRARY_KIND).net
    assert all(torch.allclose(start[k], after.decoder.state_dict()[k], atol=1e-6) for k in start)


@pytest.mark.parametrize("changes, message", [
    ({"content_weight": float("nan")}, "--content-weight must be 0 or more"),
    ({"tv_weight": float("inf")}, "--tv-weight must be 0 or more"),
    ({"lr": float("inf")}, "--lr must be positive"),
    ({"seed": -1}, "--seed must be a whole number from 0"),
    ({"seed": 10**23}, "--seed must be a whole number from 0"),  # torch.manual_seed: ValueError, a traceback
])
def test_train_config_refuses_non_finite_numbers_and_bad_seeds(changes, message):
    # NaN and inf weights passed validate() and failed only at step 1 ("the loss became nan").
    from convscope.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        TrainStyleConfig(**changes).validate()
    if "seed" in changes:
        with pytest.raises(ConfigError, match=message):
            TrainArbitraryConfig(**changes).validate()


@pytest.mark.parametrize("config", [TrainStyleConfig, TrainArbitraryConfig])
def test_train_config_refuses_a_learning_rate_adam_cannot_take(config):
    # --lr 1e308 passed validate(), and Adam's first step overflowed float32: a RuntimeError traceback.
    from convscope.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--lr must be at most 1e\+06, not 1e\+308"):
        config(lr=1e308).validate()
    config(lr=1e6).validate()


@pytest.mark.parametrize("argv, message", [
    (["--encoder-widths", "4", "4", "4"], "--encoder-widths takes four"),
    (["--mimic-weight", "-1"], "--mimic-weight must be 0 or more"),
])
def test_cli_train_lite_bad_options(folders, tmp_path, capsys, argv, message):
    content, styles, _ = folders
    out = tmp_path / "m.safetensors"
    assert main(["train-arbitrary", "--content-dir", str(content), "--style-dir", str(styles), "--encoder", "lite",
                 "--device", "cpu", "-q", *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("argv, flag", [(["--encoder-widths", "4", "4", "4", "4"], "--encoder-widths"),
                                         (["--mimic-weight", "3"], "--mimic-weight")])
def test_cli_train_arbitrary_refuses_lite_options_without_lite(folders, tmp_path, capsys, argv, flag):
    # With the default --encoder vgg19 they shape nothing: the run ignored them with exit 0.
    content, styles, _ = folders
    out = tmp_path / "m.safetensors"
    assert main(["train-arbitrary", "--content-dir", str(content), "--style-dir", str(styles), "--steps", "1",
                 "--size", "32", "--batch-size", "1", "--device", "cpu", "-q", *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{flag} applies to --encoder lite only" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    TrainArbitraryConfig(encoder="lite", encoder_widths=[4, 4, 4, 4], mimic_weight=3).validate()
    TrainArbitraryConfig(encoder_widths=[16, 32, 64, 128], mimic_weight=100.0).validate()  # the defaults


def test_the_cli_default_decoder_is_the_arbitrary_builtin():
    from convscope.cli import DEFAULT_DECODER

    assert DEFAULT_DECODER == fast_models.ARBITRARY_BUILTIN


def test_shipped_adain_stays_a_plain_decoder():
    model = load_model("adain", ARBITRARY_KIND)
    assert type(model.net) is Decoder and model.net.widths == (128, 64, 32)


def test_shipped_adain_lite_is_the_default_arbitrary_model():
    model = load_model("adain-lite", ARBITRARY_KIND)
    assert isinstance(model.net, LiteAdaIN)
    assert model.net.encoder.widths == (16, 32, 64, 128) and model.net.widths == (64, 32, 16)
    assert fast_models.ARBITRARY_BUILTIN == "adain-lite" and "distilled" in model.card["painting"]
    st = ArbitraryStylizer(config=FastConfig(device="cpu", precision="fp32"))
    assert isinstance(st.encoder, LiteEncoder) and st.model.source == model.source


def test_lite_builtin_is_listed_and_used_as_arbitrary(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("adain", "starry_night"):
        (folder / f"{name}.safetensors").write_bytes((fast_models.builtin_folder() / f"{name}.safetensors").read_bytes())
    tiny_lite_file(folder / "adain-lite.safetensors")
    monkeypatch.setattr(fast_catalog, "builtin_folder", lambda: folder)  # models uses the catalogue's
    assert fast_models.builtin_names(ARBITRARY_KIND) == ["adain", "adain-lite"]
    assert fast_models.builtin_names(STYLE_KIND) == ["starry_night"]
    assert main(["styles", "--json"]) == 0
    kinds = {r["name"]: r["kind"] for r in json.loads(capsys.readouterr().out)}
    assert kinds == {"adain": "arbitrary", "adain-lite": "arbitrary", "starry_night": "feed-forward"}
    content, style, out = tmp_path / "c.png", tmp_path / "s.png", tmp_path / "o.png"
    _photo(61, 37).save(content)
    _stripes().save(style)
    assert main(["stylize", str(content), str(style), "--method", "arbitrary", "--decoder", "adain-lite",
                 "-o", str(out), "-q"]) == 0
    assert Image.open(out).size == (61, 37)
    with pytest.raises(ModelError, match="adain-lite"):
        load_model("adain-lit", ARBITRARY_KIND)


def test_gatys_fast_init_takes_a_style_too_thin_for_the_arbitrary_default():
    # 1920x16: wide enough for the optimization at --style-scale 40 (1920 px), 4 px high at the
    # arbitrary model's default --style-size 512, an option the optimization does not have.
    style = _stripes().resize((1920, 16))
    result = _gatys("fast", 1, _photo(60, 50), style, size=48, style_scale=40)
    assert result.image.size == (48, 40)


@pytest.mark.parametrize("changes, message", [
    ({"size": "32"}, "--size must be a whole number"),            # TypeError in validate before
    ({"steps": 1.5}, "--steps must be a whole number"),           # TypeError mid-run before
    ({"steps": None}, "--steps must be a whole number"),
    ({"preview_every": 0.5}, "--preview-every must be a whole number"),  # ran before
    ({"widths": 8}, "--widths takes three"),                      # TypeError: no len()
    ({"widths": (4, 4, 4.5)}, "--widths takes three"),            # ValueError from torch
    ({"style_weight": "1"}, "--style-weight must be a number"),
    ({"style_layers": [3]}, "--style-layers needs at least one layer name"),  # TypeError at the first step
    ({"content_layer": None}, "--content-layer must be one layer name"),      # TypeError at the first step
    ({"content_layer": ["relu3_1"]}, "--content-layer must be one layer name"),  # TypeError: unhashable
])
def test_train_config_refuses_values_of_the_wrong_type(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainStyleConfig(**changes).validate()
    with pytest.raises(ConfigError, match="--encoder-widths takes four"):
        TrainArbitraryConfig(encoder_widths=4).validate()     # TypeError before
    assert TrainStyleConfig(style_layers="relu2_1").validate().style_layers == ("relu2_1",)  # was its letters


def test_train_style_takes_a_tensor_style_and_checks_its_arguments(folders, tmp_path):
    content, styles, style = folders
    out = tmp_path / "t.safetensors"
    config = tiny_style_config(steps=1, style_layers="relu2_1")
    train_style(images.pil_to_tensor(_stripes()), content, out, config)  # TypeError before
    assert config.style_layers == "relu2_1"  # the caller's config as it was (was made a tuple)
    assert load_model(out).kind == STYLE_KIND                  # kind is optional: the file's (TypeError before)
    for args, kwargs, word in [
        ((style, content, tmp_path / "a.safetensors", {"steps": 1}), {}, "TrainStyleConfig(**d)"),  # AttributeError
        ((style, content, tmp_path / "a.safetensors", tiny_arbitrary_config()), {}, "TrainStyleConfig"),
        ((style, content, None, tiny_style_config()), {}, "out"),
        ((style, [content], tmp_path / "a.safetensors", tiny_style_config()), {}, "folder path"),
        ((style, content, tmp_path / "a.safetensors", tiny_style_config()), {"callback": 3}, "callback"),
        ((style, content, tmp_path / "a.safetensors", tiny_style_config()), {"card": "x"}, "card"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(word)):
            train_style(*args, **kwargs)
    with pytest.raises(ConfigError, match="style images must be given as a folder"):
        train_arbitrary(content, _stripes(), tmp_path / "b.safetensors", tiny_arbitrary_config())
    with pytest.raises(ModelError, match="not int"):
        load_model(3)
    with pytest.raises(ConfigError, match="unknown device"):
        load_model("starry_night", device="gpu")


def test_arbitrary_tensor_takes_styles_and_mask_as_paths_and_tensors(tmp_path):
    # .tensor took only PIL styles and masks: a path or tensor was a raw AttributeError or TypeError.
    _stripes().save(tmp_path / "s.png")
    s = ArbitraryStylizer(config=FastConfig(device="cpu", precision="fp32"))
    x = images.pil_to_tensor(_photo())
    expected = s.tensor(x, [_stripes()])
    for styles in (str(tmp_path / "s.png"), [images.pil_to_tensor(_stripes())], images.pil_to_tensor(_stripes())):
        assert torch.equal(s.tensor(x, styles), expected)
    mask = Image.new("L", (48, 40), 0)
    by_pil = s.tensor(x, [_stripes(), _photo()], mask=mask)
    assert torch.equal(s.tensor(x, [_stripes(), _photo()], mask=images.pil_to_tensor(mask.convert("RGB"))), by_pil)
    with pytest.raises(ImageError, match="^style image 1 must be a file path"):
        s.tensor(x, [5])


def test_arbitrary_style_statistics_cache_stays_bounded():
    from convscope.fast import apply as fast_apply

    s = ArbitraryStylizer(config=FastConfig(style_size=32, device="cpu", precision="fp32"))
    kept = [_photo(16, 16) for _ in range(fast_apply.STYLE_CACHE + 5)]  # new images, as from paths each call
    stats = [s.style_stats(img) for img in kept]
    assert len(s._stats) == fast_apply.STYLE_CACHE
    assert s.style_stats(kept[-1]) is stats[-1]  # the newest are still served from the cache
    assert s.style_stats(kept[0]) is not stats[0]  # the oldest went first: computed again

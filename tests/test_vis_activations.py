"""Tests for the activations engine (convscope.vis.activations) and `convscope activations`.

Images are tiny (2-48 px) and generated in tmp_path; outputs go to tmp_path/out so "nothing was
left behind" is a check of the whole folder. VGG19 is loaded once per module and handed to the
CLI by patching the engine's get_net (loading it takes seconds; the forward passes do not).
A hand-built one-conv Backbone with known weights is the oracle for the statistics and orders.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from convscope.cli import main
from convscope.errors import ConfigError
from convscope.images import pil_to_tensor, read_png_metadata, resize_long_side
from convscope.nets import get_net
from convscope.nets.base import Backbone
from convscope.vis import activations as engine
from convscope.vis import loadnet
from convscope.vis.activations import (ActivationsConfig, activations, figure_pixels, grid_panels,
                                       layer_figure, stats_dict)

VGG19_BLOCK_OUTPUTS = ["relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4"]


@pytest.fixture(scope="module")
def vgg():
    return get_net("vgg19", device="cpu")


@pytest.fixture
def cli_net(vgg, monkeypatch):
    """The CLI gets the module's VGG19 instead of loading its own (same weights, seconds saved)."""
    def fake_get_net(name="vgg19", pooling="max", device="cpu"):
        assert (name, pooling, str(device)) == ("vgg19", "max", "cpu")
        return vgg

    monkeypatch.setattr(loadnet, "get_net", fake_get_net)


@pytest.fixture
def photo(tmp_path) -> Path:
    """A 48x40 image with structure (gradients and a square), so channels differ."""
    y, x = np.mgrid[0:40, 0:48]
    arr = np.stack([x * 5, y * 6, ((x // 8 + y // 8) % 2) * 200], axis=-1).astype(np.uint8)
    arr[10:25, 15:30] = (250, 250, 30)
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    path = tmp_path / "in" / "photo.png"
    Image.fromarray(arr).save(path)
    return path


def tiny_net() -> Backbone:
    """One 1x1 conv, no preprocessing: ch0 = R - 0.5, ch1 = 2R - 2, ch2 = 4B - 1."""
    conv = nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 1.0
        conv.weight[1, 0] = 2.0
        conv.weight[2, 2] = 4.0
        conv.bias.copy_(torch.tensor([-0.5, -2.0, -1.0]))
    return Backbone(["conv1_1"], [conv], {}, nn.Identity(), "tiny").eval()


# 2x2 RGB: R = 1, 0, 1, 1 and B = 1, 0, 0, 0 (in [0, 1]).
TINY_PIXELS = np.array([[[255, 0, 255], [0, 0, 0]], [[255, 0, 0], [255, 0, 0]]], dtype=np.uint8)


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, out, err, *needles):
    assert code == 2
    assert out == ""
    assert err.startswith("convscope: error:") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err


# ------------------------------------------------------------------------------------ engine

def test_feature_maps_are_the_nets_features_and_aliases_keep_their_name(vgg, photo):
    image = Image.open(photo).convert("RGB")
    config = ActivationsConfig(layer="block2_conv1", size=40, device="cpu")
    result = activations(image, config, net=vgg)
    (la,) = result.layers
    assert (la.name, la.canonical) == ("block2_conv1", "relu2_1")
    x = pil_to_tensor(resize_long_side(image, 40))
    expected = vgg.features(x, ["relu2_1"])["relu2_1"][0]
    assert la.shape == [128, 16, 20]
    torch.testing.assert_close(la.maps, expected)
    torch.testing.assert_close(la.mean, expected.mean(dim=(1, 2)))
    assert result.image.size == (40, 33)


def test_statistics_and_orders_on_a_known_net():
    image = Image.fromarray(TINY_PIXELS)
    expected_orders = {"mean": [0, 2, 1], "max": [2, 0, 1], "index": [0, 1, 2]}
    for sort, order in expected_orders.items():
        result = activations(image, ActivationsConfig(layer="conv1_1", size=2, sort=sort, device="cpu"),
                             net=tiny_net())
        (la,) = result.layers
        assert la.order == order, sort
        # ch0 = R - 0.5 = .5, -.5, .5, .5; ch1 = 2R - 2 = 0, -2, 0, 0 (zero is not positive);
        # ch2 = 4B - 1 = 3, -1, -1, -1.
        torch.testing.assert_close(la.mean, torch.tensor([0.25, -0.5, 0.0]))
        torch.testing.assert_close(la.max, torch.tensor([0.5, 0.0, 3.0]))
        torch.testing.assert_close(la.positive, torch.tensor([0.75, 0.0, 0.25]))
        assert result.config.net == "tiny"  # the net handed in, not config.net's vgg19
        assert stats_dict(result)["net"] == "tiny"


def test_all_conv_is_each_blocks_last_activation(vgg):
    assert vgg.block_outputs() == VGG19_BLOCK_OUTPUTS
    assert tiny_net().block_outputs() == ["conv1_1"]  # a conv with no ReLU is its block's output


def test_panels_are_the_input_then_the_top_channels_in_order(vgg, photo):
    image = Image.open(photo).convert("RGB")
    result = activations(image, ActivationsConfig(layer="relu1_1", size=32, max_channels=10, device="cpu"),
                         net=vgg)
    (la,) = result.layers
    panels = grid_panels(result, la)
    assert len(panels) == 11
    assert panels[0].channel is None and panels[0].data.shape == (27, 32, 3)
    assert [p.channel for p in panels[1:]] == la.order[:10]
    assert la.mean[la.order[0]] >= la.mean[la.order[9]]
    assert panels[1].label.startswith(f"#{la.order[0]} ")
    # More channels than the layer has: all of them, no more.
    small = activations(Image.fromarray(TINY_PIXELS), ActivationsConfig(layer="conv1_1", size=2, device="cpu"),
                        net=tiny_net())
    assert len(grid_panels(small, small.layers[0])) == 1 + 3


def test_figure_grows_with_panels_and_shared_scale_adds_a_colour_bar(vgg, photo):
    image = Image.open(photo).convert("RGB")
    base = ActivationsConfig(layer="relu1_1", size=32, device="cpu")
    sizes = {}
    variants = {"few": {"max_channels": 3}, "many": {"max_channels": 48},
                "shared": {"max_channels": 48, "shared_scale": True}}
    for name, changes in variants.items():
        config = replace(base, **changes)
        result = activations(image, config, net=vgg)
        figure = layer_figure(result, result.layers[0])
        assert figure.mode == "RGB"
        assert figure_pixels(result, result.layers[0]) == figure.width * figure.height  # known before drawing
        sizes[name] = figure.size
    assert sizes["many"][1] > sizes["few"][1]           # more rows
    assert sizes["shared"][0] > sizes["many"][0]        # room for the colour bar
    assert sizes["shared"][1] == sizes["many"][1]


def test_config_validation():
    with pytest.raises(ConfigError, match="did you mean 'viridis'"):
        ActivationsConfig(cmap="virdis").validate()
    for bad in ({"size": 0}, {"max_channels": -1}, {"sort": "median"}, {"size": 10**5}):
        with pytest.raises(ConfigError):
            ActivationsConfig(**bad).validate()
    with pytest.raises(ConfigError, match="too small for relu5_1"):
        activations(Image.fromarray(TINY_PIXELS), ActivationsConfig(layer="relu5_1", size=8, device="cpu"),
                    net=_vgg_like_without_weights())


@pytest.mark.parametrize("layer", ["classifier.1", "logits"])
def test_a_layer_without_a_spatial_grid_is_a_config_error(layer):
    # A Linear layer's output is a vector: maps.mean(dim=(1, 2)) raised IndexError; logits said
    # "unknown layer ''".
    from tinynets import cifar_net

    with pytest.raises(ConfigError, match=f"{layer} of cifar-test has no spatial grid"):
        activations(Image.fromarray(TINY_PIXELS), ActivationsConfig(layer=layer, size=32, device="cpu"),
                    net=cifar_net())


def _vgg_like_without_weights() -> Backbone:
    """VGG19's layer names and pooling, random weights: enough for name and size checks."""
    from convscope.nets.vgg import CaffePreprocess, build_vgg

    return build_vgg("vgg19", "max", CaffePreprocess(), "vgg19").eval()


# --------------------------------------------------------------------------------------- CLI

def test_cli_writes_the_figure_with_its_config(capsys, cli_net, photo, tmp_path):
    out = tmp_path / "out" / "grid.png"
    code, stdout, err = run(capsys, "activations", photo, "--layer", "relu1_1", "--size", "32",
                            "--max-channels", "4", "--device", "cpu", "-o", out)
    assert code == 0, err
    assert stdout == "" and "wrote" in err
    assert sorted(p.name for p in out.parent.iterdir()) == ["grid.json", "grid.png"]
    meta = json.loads((tmp_path / "out" / "grid.json").read_text())
    assert meta["command"] == "activations"
    assert meta["config"]["layer"] == "relu1_1" and meta["config"]["device"] == "cpu"
    assert meta["shape"] == [64, 27, 32]
    assert len(meta["channels_shown"]) == 4
    assert read_png_metadata(out)["shape"] == [64, 27, 32]


def test_cli_all_conv_writes_one_figure_per_block(capsys, cli_net, photo, tmp_path):
    out = tmp_path / "out" / "maps.png"
    code, _, err = run(capsys, "activations", photo, "--layer", "all-conv", "--size", "32",
                       "--max-channels", "2", "--device", "cpu", "-q", "-o", out)
    assert code == 0, err
    assert err == ""
    expected = sorted(f"maps_{layer}.{ext}" for layer in VGG19_BLOCK_OUTPUTS for ext in ("png", "json"))
    assert sorted(p.name for p in out.parent.iterdir()) == expected
    deepest = json.loads((out.parent / "maps_relu5_4.json").read_text())
    assert deepest["shape"] == [512, 1, 2]


def test_cli_all_conv_refuses_a_figure_over_an_input_or_a_folder_before_writing(capsys, cli_net, photo, tmp_path):
    # The per-block names are known only after the pass: maps_relu2_2.png as the input was replaced by
    # its figure (exit 0), and a folder maps_relu5_4.png failed the run after the figures before it had
    # been written over an earlier run's, then deleted.
    folder = tmp_path / "out"
    source = folder / "maps_relu2_2.png"
    source.write_bytes(Path(photo).read_bytes())
    argv = ["--layer", "all-conv", "--size", "32", "--max-channels", "2", "--device", "cpu", "-q"]
    code, stdout, err = run(capsys, "activations", source, *argv, "-o", folder / "maps.png")
    assert_one_line_error(code, stdout, err, "maps_relu2_2.png is one of this run's inputs")
    assert source.read_bytes() == Path(photo).read_bytes() and [p.name for p in folder.iterdir()] == [source.name]
    source.unlink()
    (folder / "maps_relu1_2.png").write_bytes(b"an earlier figure")
    (folder / "maps_relu5_4.png").mkdir()
    code, stdout, err = run(capsys, "activations", photo, *argv, "-o", folder / "maps.png")
    assert_one_line_error(code, stdout, err, "maps_relu5_4.png", "folder")
    assert (folder / "maps_relu1_2.png").read_bytes() == b"an earlier figure"
    assert sorted(p.name for p in folder.iterdir()) == ["maps_relu1_2.png", "maps_relu5_4.png"]


def test_cli_all_conv_failing_midway_puts_back_the_earlier_figures(capsys, cli_net, photo, tmp_path, monkeypatch):
    # A rerun whose third figure cannot be written (disk full) deleted the earlier run's first two
    # figures and sidecars, which it had just replaced.
    from convscope import images
    from convscope.errors import OutputError

    out = tmp_path / "out" / "maps.png"
    argv = ["activations", photo, "--layer", "all-conv", "--size", "32", "--max-channels", "2", "--device", "cpu",
            "-q", "-o", out]
    assert run(capsys, *argv)[0] == 0
    before = {p.name: p.read_bytes() for p in out.parent.iterdir()}
    real, calls = images.save_image, []

    def full_disk(image, path, metadata=None):
        calls.append(path)
        if len(calls) == 3:
            raise OutputError(f"cannot write {path}: no space left on device")
        return real(image, path, {"a": "rerun"})

    monkeypatch.setattr(images, "save_image", full_disk)
    code, stdout, err = run(capsys, *argv)
    assert_one_line_error(code, stdout, err, "no space left")
    assert {p.name: p.read_bytes() for p in out.parent.iterdir()} == before


def test_cli_json_on_stdout_without_a_figure(capsys, cli_net, photo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path / "out")
    code, stdout, err = run(capsys, "activations", photo, "--layer", "relu1_2", "--size", "32",
                            "--sort", "max", "--device", "cpu", "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    (layer,) = doc["layers"]
    assert layer["shape"] == [64, 27, 32]
    assert [c["index"] for c in layer["channels"]] == list(range(64))
    assert sorted(layer["order"]) == list(range(64))
    maxima = [layer["channels"][i]["max"] for i in layer["order"]]
    assert maxima == sorted(maxima, reverse=True)
    assert all(0.0 <= c["positive_fraction"] <= 1.0 and c["mean"] <= c["max"] for c in layer["channels"])
    assert list((tmp_path / "out").iterdir()) == []


def test_cli_json_and_figure_together(capsys, cli_net, photo, tmp_path):
    out = tmp_path / "out" / "grid.png"
    code, stdout, err = run(capsys, "activations", photo, "--layer", "conv1_1", "--size", "32",
                            "--max-channels", "2", "--device", "cpu", "--json", "-q", "-o", out)
    assert code == 0, err
    assert json.loads(stdout)["layers"][0]["shape"] == [64, 27, 32]
    assert out.is_file()


@pytest.mark.parametrize("argv, needles", [
    (["--layer", "relu2_l"], ["unknown layer 'relu2_l'", "did you mean"]),
    (["--layer", "all_conv"], ["did you mean 'all-conv'"]),
    (["--cmap", "virdis"], ["unknown colormap 'virdis'", "did you mean 'viridis'"]),
    (["--size", "8", "--layer", "relu5_1"], ["too small"]),
    (["--max-channels", "0"], ["--max-channels"]),
])
def test_cli_bad_options_exit_2_with_nothing_written(capsys, cli_net, photo, tmp_path, argv, needles):
    out = tmp_path / "out" / "grid.png"
    code, stdout, err = run(capsys, "activations", photo, "--device", "cpu", "-o", out, *argv)
    assert_one_line_error(code, stdout, err, *needles)
    assert list(out.parent.iterdir()) == []


def test_cli_needs_an_output_or_json(capsys, photo):
    assert_one_line_error(*run(capsys, "activations", photo), "-o", "--json")


@pytest.mark.parametrize("argv", [["--cmap", "magma"], ["--max-channels", "2"], ["--shared-scale"]])
def test_cli_figure_options_without_a_figure_are_refused(capsys, cli_net, photo, argv):
    # --json alone draws no figure: these printed the same statistics, exit 0.
    code, stdout, err = run(capsys, "activations", photo, "--json", "--layer", "conv1_1", "--size", "32",
                            "--device", "cpu", *argv)
    assert_one_line_error(code, stdout, err, f"{argv[0]} shapes the figure, and --json alone draws none")


@pytest.mark.parametrize("kind", ["missing", "corrupt", "truncated"])
def test_cli_bad_image_exit_2_with_nothing_written(capsys, photo, tmp_path, kind):
    bad = tmp_path / "in" / "bad.jpg"
    if kind == "corrupt":
        bad.write_bytes(b"this is not a JPEG at all" * 20)
    elif kind == "truncated":
        Image.open(photo).convert("RGB").save(bad, quality=90)
        bad.write_bytes(bad.read_bytes()[:200])
    out = tmp_path / "out" / "grid.png"
    code, stdout, err = run(capsys, "activations", bad, "--device", "cpu", "-o", out)
    assert_one_line_error(code, stdout, err, "bad.jpg")
    assert list(out.parent.iterdir()) == []


def test_the_image_may_be_a_path_or_a_tensor_and_wrong_kinds_are_one_line_errors(vgg, photo):
    config = ActivationsConfig(layer="relu1_1", size=32, device="cpu")
    from_pil = activations(Image.open(photo), config, net=vgg)
    for image in (photo, str(photo), pil_to_tensor(from_pil.image)):  # AttributeError 'load' before
        assert torch.allclose(activations(image, config, net=vgg).layers[0].maps, from_pil.layers[0].maps, atol=1e-5)
    from convscope.errors import ImageError
    with pytest.raises(ImageError, match="not NoneType"):
        activations(None, config, net=vgg)
    for bad_config, word in [({"size": 32}, "ActivationsConfig"),                   # AttributeError before
                             (replace(config, layer=None), "--layer"),              # TypeError before
                             (replace(config, cmap=None), "colormap"),              # TypeError before
                             (replace(config, shared_scale="no"), "--shared-scale")]:  # ran as True before
        with pytest.raises(ConfigError, match=word):
            activations(photo, bad_config, net=vgg)
    with pytest.raises(ConfigError, match="loaded net"):                            # AttributeError before
        activations(photo, config, net="vgg19")

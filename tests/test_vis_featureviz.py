"""Feature visualization and class visualization: engine properties on tiny images, and the CLI.

Properties, not pictures: the objective a run maximizes must end well above where it started, on
every kind of net (VGG, EfficientNet, torchvision nets at random init, a 32 px CIFAR-style net);
transforms and parameterizations keep images in [0, 1] and behave as documented; bad input is one
line and exit 2 with nothing written. Nets are built once per module (netcache) and handed to the
CLI by patching the engine's get_net.
"""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
import torch
from interrupt import ctrl_c_bar
from netcache import cached_get_net
from PIL import Image

from tinynets import cifar_net
from convscope.cli import main
from convscope.errors import ConfigError
from convscope.images import read_png_metadata
from convscope.nets import hook_count, imagenet_classes
from convscope.vis import featureviz as engine
from convscope.vis import loadnet
from convscope.vis.featureviz import (ClassVizConfig, FeatureVisualizer, FeatureVizConfig, classviz, featureviz,
                                      parse_indices, resolve_classes)
from convscope.vis.featureviz_sheet import sheet
from convscope.vis.imageprior import ImageParam, random_transform

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


REAL_GET_NET = loadnet.get_net
NETS: dict = {}


def build(name="vgg19", pooling="max", device="cpu", dtype=torch.float32):
    if name == "cifar-test":
        return cifar_net()
    return REAL_GET_NET(name, pooling, device, dtype)  # NAME:random: the same weights in every run


@pytest.fixture(scope="module", autouse=True)
def shared_nets():
    """Each net is built once for this module; `cifar-test` is the 32 px net above, so the CLI
    can be run on it by name."""
    from convscope import cli

    real_check = cli.refuse_an_unknown_net  # the CLI's quick --net check knows only real nets
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loadnet, "get_net", cached_get_net(build, NETS))
        mp.setattr(cli, "refuse_an_unknown_net", lambda args: None if getattr(args, "net", None) == "cifar-test" else real_check(args))
        yield


def net(name: str):
    return loadnet.get_net(name)


def tiny(**kw) -> FeatureVizConfig:
    return FeatureVizConfig(**{"size": 48, "steps": 12, "lr": 0.1, "device": "cpu", "precision": "fp32", **kw})


# ------------------------------------------------------------------------------ target parsing

def test_channel_specs():
    assert parse_indices("0-15") == list(range(16))
    assert parse_indices("3,7,9") == [3, 7, 9]
    assert parse_indices("5") == [5]
    assert parse_indices(" 0-2, 8 ,1") == [0, 1, 2, 8]  # repeats dropped, order kept
    for bad in ("x", "5-3", "", "-1", "1,,2", "0-15-20"):
        with pytest.raises(ConfigError, match="--channels must be like"):
            parse_indices(bad)


def test_imagenet_names_resolve_any_case_with_did_you_mean():
    fake = SimpleNamespace(num_classes=1000, classes=list(imagenet_classes()), net_name="efficientnet_lite0")
    assert resolve_classes("military uniform", fake) == [652]
    assert resolve_classes("Military_Uniform", fake) == [652]
    assert resolve_classes("dumbbell", fake) == [543]
    assert resolve_classes("543", fake) == [543]
    assert resolve_classes("dumbbell, 1-2", fake) == [543, 1, 2]
    assert resolve_classes("three-toed sloth", fake) == [364]  # a hyphen in a name is not a range
    with pytest.raises(ConfigError, match="did you mean 'dumbbell'"):
        resolve_classes("dumbell", fake)
    with pytest.raises(ConfigError, match="out of range.*1000 classes"):
        resolve_classes("1000", fake)
    headless = SimpleNamespace(num_classes=None, classes=None, net_name="vgg19")
    with pytest.raises(ConfigError, match="efficientnet_lite0"):
        resolve_classes("5", headless)


# ---------------------------------------------------------------------------- parameterization

def test_parameterizations_start_grey_and_stay_in_range():
    gen = torch.Generator().manual_seed(0)
    for kind in ("fft", "pixels"):
        for decorrelate in (True, False):
            p = ImageParam(3, 40, kind, decorrelate, gen, torch.device("cpu"))
            x = p.images()
            assert x.shape == (3, 3, 40, 40)
            assert (x - 0.5).abs().max() < 0.05, kind  # sigmoid(~0): near-uniform grey
            with torch.no_grad():
                p.tensor.normal_(0, 50)
            x = p.images()
            assert x.min() >= 0 and x.max() <= 1
    p = ImageParam(1, 64, "fft", False, gen, torch.device("cpu"))
    assert p.scale.pow(2).mean().sqrt().item() == pytest.approx(1.0, rel=1e-5)  # unit RMS
    assert p.scale[0, 0] > p.scale[32, 32] * 20  # low frequencies get the larger steps


@pytest.mark.parametrize("kind", ["fft", "pixels"])
def test_blur_removes_fine_detail_and_decay_pulls_to_grey(kind):
    gen = torch.Generator().manual_seed(1)
    p = ImageParam(1, 32, kind, False, gen, torch.device("cpu"))
    with torch.no_grad():
        p.tensor.normal_(0, 1)
    def roughness():
        x = p.images().detach()
        return (x[..., 1:, :] - x[..., :-1, :]).abs().mean().item()
    before = roughness()
    p.blur(1.5)
    assert roughness() < 0.6 * before
    spread = (p.images() - 0.5).abs().mean().item()
    p.decay(0.5)
    assert (p.images() - 0.5).abs().mean().item() < 0.7 * spread


def test_transforms_identity_shift_and_grey_border():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    same = random_transform(x, 3, 0, 0.0, 0.0, gen)
    assert same.shape == (6, 3, 16, 16) and torch.equal(same[4:], x)
    white = torch.ones(1, 3, 16, 16)
    moved = random_transform(white, 8, 3, 0.0, 0.0, gen)  # whole-pixel shifts only
    # Shifted in: grey (0.5) rows/columns; everything else is the image, exactly.
    values = set(torch.round(moved * 1000).unique().tolist())
    assert values <= {500.0, 1000.0} and 500.0 in values
    turned = random_transform(white, 4, 0, 0.2, 30.0, gen)
    assert turned.min() >= 0.5 - 1e-6 and turned.max() <= 1 + 1e-6
    assert (turned[..., 0, 0] < 0.99).any()  # a rotated/zoomed-out corner shows the grey fill


# -------------------------------------------------------------------------------- the objective

OBJECTIVE_NETS = ["vgg19", "efficientnet_lite0", "resnet18:random", "mobilenet_v3_small:random",
                  "densenet121:random", "cifar-test"]


@pytest.mark.parametrize("name", OBJECTIVE_NETS)
def test_activation_rises_far_above_the_start(name):
    small = name == "cifar-test"
    config = tiny(net=name, channels="0,3", size=None if small else 48, steps=128 if small else 12)
    result = featureviz(config)
    assert result.config.size == (32 if small else 48)
    assert result.config.jitter == (2 if small else 3)  # size / 16: transforms scale with the image
    assert result.images.shape == (2, 3, result.config.size, result.config.size)
    assert 0 <= result.images.min() and result.images.max() <= 1
    assert result.targets == [0, 3] and result.labels == ["#0", "#3"]
    start, end = torch.tensor(result.initial), torch.tensor(result.final)
    # Every channel rises, by more than half the start's magnitude (random nets' activations can
    # be 1e-6, so the test is relative).
    assert (end > start).all(), (start, end)
    assert (end - start).mean() > 0.5 * start.abs().mean(), (start, end)
    assert len(result.history) == config.steps


def test_neuron_objective_is_the_centre_position():
    v = FeatureVisualizer(tiny(channels="5", neuron=True, layer="relu3_1"))
    x = torch.rand(1, 3, 48, 48)
    f = v.net.features(x, ["relu3_1"])["relu3_1"]
    assert v.measure(x, [5]) == pytest.approx([f[0, 5, 6, 6].item()], rel=1e-5)
    result = v.run()
    assert result.final[0] > result.initial[0] + 1.0


def test_class_logit_rises_on_efficientnet():
    result = featureviz(tiny(net="efficientnet_lite0", target_class="dumbbell", size=64, steps=10))
    assert result.kind == "class" and result.targets == [543] and result.labels == ["543 dumbbell"]
    assert result.final[0] > result.initial[0] + 10, (result.initial, result.final)
    assert 0 <= result.probabilities[0] <= 1 and len(result.top5[0]) == 5


def test_classviz_defaults_and_one_class_only():
    config = ClassVizConfig(target_class="military uniform", steps=2, device="cpu")
    v = FeatureVisualizer(config)
    assert (v.config.net, v.config.size, v.config.copies, v.targets) == ("efficientnet_lite0", 224, 2, [652])
    with pytest.raises(ConfigError, match="one class"):
        FeatureVisualizer(ClassVizConfig(target_class="1,2", device="cpu"))


def test_classviz_on_a_32px_net_draws_at_its_input_size():
    result = classviz(ClassVizConfig(net="cifar-test", target_class="Cat", steps=24, device="cpu",
                                     precision="fp32"))
    assert result.targets == [3] and result.image(0).size == (32, 32)
    assert result.config.jitter == 2 and result.config.blur == pytest.approx(32 / 640)
    assert result.final[0] - result.initial[0] > 0.5 * abs(result.initial[0]), (result.initial, result.final)


def test_auto_layer_and_default_channels_on_every_net():
    for name in ["vgg19", "efficientnet_lite0", "resnet18:random", "cifar-test"]:
        v = FeatureVisualizer(tiny(net=name, size=None))
        assert v.layer in v.net.block_outputs()
        assert v.targets == list(range(min(16, v.net.channels_of(v.layer))))
    assert FeatureVisualizer(tiny()).config.layer == "relu3_4"


def test_batches_are_stages_and_seeds_repeat():
    seen = []
    config = tiny(net="cifar-test", channels="0-4", batch=2, steps=3, size=None)
    a = featureviz(config, seen.append)
    assert [(p.stage, p.stages) for p in seen if p.iteration == 1] == [(1, 3), (2, 3), (3, 3)]
    assert a.targets == [0, 1, 2, 3, 4]
    b = featureviz(config)
    assert torch.equal(a.images, b.images)
    c = featureviz(tiny(net="cifar-test", channels="0-4", batch=2, steps=3, size=None, seed=1))
    assert not torch.equal(a.images, c.images)


def test_hooks_removed_and_time_does_not_grow():
    v = FeatureVisualizer(tiny(net="resnet18:random", channels="1", steps=2, size=32))
    times = []
    for _ in range(20):
        t = time.perf_counter()
        v.run()
        times.append(time.perf_counter() - t)
    assert hook_count(v.net) == 0
    # Fastest of the last five against the fastest of the first five: robust to a busy machine.
    assert min(times[-5:]) < 3 * min(times[:5]) + 0.05, times


def test_bad_configs_fail_before_any_work():
    for bad, needle in (({"steps": 0}, "--steps"), ({"lr": -1.0}, "--lr"), ({"param": "jpeg"}, "--param"),
                        ({"scale": 0.9}, "--scale"), ({"copies": 0}, "--copies"), ({"size": 4}, "--size"),
                        ({"channels": "a-b"}, "--channels"),
                        ({"target_class": "3", "channels": "1"}, "two different objectives"),
                        ({"target_class": "3", "layer": "relu3_1"}, "leave out --layer"),
                        # The pixels parameterization has no spectrum: ignored, exit 0.
                        ({"param": "pixels", "fft_power": 2.0}, "--fft-power shapes the fft"),
                        # Without transforms the copies are one image repeated: ignored, exit 0.
                        ({"copies": 3, "jitter": 0, "scale": 0.0, "rotate": 0.0}, "the copies are the same image")):
        with pytest.raises(ConfigError, match=needle):
            FeatureVizConfig(**bad).validate()
    with pytest.raises(ConfigError, match="too small"):
        FeatureVisualizer(tiny(layer="relu5_1", size=8))
    # Logits have no positions, so no centre neuron: --neuron was ignored (exit 0, "kind": "neuron").
    with pytest.raises(ConfigError, match="--neuron maximizes a channel's centre position, and logits of cifar-test"):
        FeatureVisualizer(tiny(net="cifar-test", layer="logits", channels="1", neuron=True, size=None))


# ------------------------------------------------------------------------------------------ CLI

CLI_TINY = ["--size", "32", "--steps", "3", "--device", "cpu", "--precision", "fp32", "-q"]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.err


def test_cli_featureviz_writes_sheet_and_sidecar(tmp_path, capsys):
    out = tmp_path / "sheet.png"
    code, err = run_cli(capsys, "featureviz", "--net", "vgg19", "--layer", "relu2_1", "--channels", "0-3",
                        "-o", out, *CLI_TINY)
    assert code == 0, err
    sheet_img = Image.open(out)
    assert sheet_img.mode == "RGB" and sheet_img.width > 400
    meta = json.loads((tmp_path / "sheet.json").read_text())
    assert meta["command"] == "featureviz" and meta["layer"] == "relu2_1" and meta["kind"] == "channel"
    assert meta["config"]["channels"] == "0-3" and meta["config"]["jitter"] == 2
    assert [p["index"] for p in meta["panels"]] == [0, 1, 2, 3]
    assert all(isinstance(p["final"], float) and isinstance(p["start"], float) for p in meta["panels"])
    assert read_png_metadata(out)["command"] == "featureviz"


def test_cli_featureviz_classes_of_a_32px_net(tmp_path, capsys):
    out = tmp_path / "classes.png"
    code, err = run_cli(capsys, "featureviz", "--net", "cifar-test", "--class", "0-9", "-o", out,
                        "--steps", "2", "--device", "cpu", "-q")
    assert code == 0, err
    meta = json.loads((tmp_path / "classes.json").read_text())
    assert meta["kind"] == "class" and meta["config"]["size"] == 32
    assert [p["label"] for p in meta["panels"]][:2] == ["0 airplane", "1 automobile"]


def test_cli_classviz_writes_the_picture(tmp_path, capsys):
    out = tmp_path / "dumbbell.png"
    code, err = run_cli(capsys, "classviz", "--class", "dumbbell", "-o", out, "--size", "64", "--steps", "4",
                        "--device", "cpu")
    assert code == 0, err
    assert "wrote" in err and "543 dumbbell" in err
    assert Image.open(out).size == (64, 64)
    meta = json.loads((tmp_path / "dumbbell.json").read_text())
    assert meta["command"] == "classviz" and meta["class_index"] == 543 and meta["class_name"] == "dumbbell"
    assert meta["logit"] > meta["start_logit"]
    assert meta["config"]["net"] == "efficientnet_lite0"


@pytest.mark.parametrize("argv, needle", [
    (["featureviz", "--layer", "relu9_1"], "did you mean"),
    (["featureviz", "--layer", "relu2_1", "--channels", "0-200"], "128 channels"),
    (["featureviz", "--channels", "abc"], "--channels must be like"),
    (["featureviz", "--class", "3"], "use --net efficientnet_lite0"),
    (["featureviz", "--net", "cifar-test", "--class", "10"], "out of range"),
    (["classviz", "--class", "1000"], "out of range: efficientnet_lite0 has 1000 classes"),
    (["classviz", "--class", "dumbell"], "did you mean 'dumbbell'"),
    (["classviz", "--class", "5", "--net", "vgg19"], "use --net efficientnet_lite0"),
    (["classviz", "--class", "5", "--steps", "0"], "--steps"),
    (["classviz"], "--class"),
    (["classviz", "--class", "5", "--param", "pixels", "--fft-power", "1"], "not --param pixels"),
])
def test_cli_bad_input_exit_2_one_line_no_output(tmp_path, capsys, argv, needle):
    out = tmp_path / "o.png"
    code, err = run_cli(capsys, argv[0], *CLI_TINY, *argv[1:], "-o", out)  # later options win
    assert code == 2
    err = err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["classviz", "featureviz"])
def test_too_small_for_class_logits_suggests_no_layer(tmp_path, capsys, command):
    # Class logits have no shallower layer, and classviz has no --layer option to suggest.
    out = tmp_path / "o.png"
    code, err = run_cli(capsys, command, *CLI_TINY, "--net", "efficientnet_lite0", "--class", "5",
                        "--size", "16", "-o", out)
    assert code == 2 and "needs at least 32 px; use a larger --size" in err, err
    assert "--layer" not in err and list(tmp_path.iterdir()) == []


def test_ctrl_c_saves_the_sheet_so_far(tmp_path, monkeypatch, capsys):
    import convscope.commands.featureviz as command

    monkeypatch.setattr(command, "progress_bar", ctrl_c_bar(2, stage=2))
    out = tmp_path / "s.png"
    code = main(["featureviz", "--net", "cifar-test", "--channels", "0-5", "--batch", "3", "--steps", "4",
                 "--device", "cpu", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err and str(out) in err, err
    meta = json.loads(out.with_suffix(".json").read_text())
    assert len(meta["panels"]) == 6  # the finished batch and the interrupted one
    assert meta["interrupted_at"] == {"stage": 2, "step": 2}


def test_sheet_labels_every_panel():
    result = featureviz(tiny(net="cifar-test", channels="0-4", steps=2, size=None))
    figure = sheet(result)
    assert figure.mode == "RGB"
    more = featureviz(tiny(net="cifar-test", channels="0-15", steps=1, size=None))
    assert sheet(more).height > figure.height  # more rows


def test_ctrl_c_in_classviz_saves_the_picture_so_far(tmp_path, monkeypatch, capsys):
    import convscope.cli as cli

    monkeypatch.setattr(cli, "progress_bar", ctrl_c_bar(2))
    out = tmp_path / "c.png"
    code = main(["classviz", "--class", "3", "--net", "cifar-test", "--steps", "5", "--device", "cpu", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err and str(out) in err, err
    assert Image.open(out).size == (32, 32)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["command"] == "classviz" and meta["interrupted_at"]["iteration"] == 2
    assert meta["config"]["size"] == 32 and meta["config"]["jitter"] == 2  # the resolved config


def test_wrong_kinds_of_config_net_and_callback_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"FeatureVizConfig\(\*\*d\)"):             # AttributeError before
        featureviz({"steps": 1})
    with pytest.raises(ConfigError, match="must be a ClassVizConfig"):              # None: AttributeError;
        classviz(None)
    with pytest.raises(ConfigError, match="must be a ClassVizConfig"):              # a FeatureVizConfig ran
        classviz(tiny(channels="0"))
    for bad, word in [({"layer": None}, "--layer"), ({"neuron": "no"}, "--neuron"),   # TypeError / ran as True
                      ({"decorrelate": "no"}, "--decorrelate")]:
        with pytest.raises(ConfigError, match=word):
            featureviz(tiny(**bad))
    with pytest.raises(ConfigError, match="loaded net"):                            # AttributeError before
        featureviz(tiny(), net="vgg19")
    with pytest.raises(ConfigError, match="callback"):                              # TypeError at step 1 before
        featureviz(tiny(layer="relu1_1", channels="0", steps=1), callback=3)

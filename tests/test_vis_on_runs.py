"""The vis engines' view of classifier run folders (`--net RUN_DIR`): `as_net` of a loaded run, for
each kind of model `classify train` builds. Models are built, not trained: the wrapping is the subject."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from convscope.classify.config import TrainConfig
from convscope.classify.models import build_model
from convscope.classify.predict import LoadedRun, as_net
from convscope.nets import auto_layer

CLASSES = ["blue", "green", "red"]


def run_net(model_name: str, size: int):
    torch.manual_seed(0)
    model = build_model(model_name, len(CLASSES), size, pretrained=False).eval().requires_grad_(False)
    return as_net(LoadedRun(model, TrainConfig(model=model_name, input_size=size), CLASSES, size, Path("run")))


def test_a_flattening_head_is_fed_its_training_size_from_any_image_size():
    # vgg19-bn flattens its 1x1 final grid at 32 px; 48 px also ends 1x1 (floors), 224 px ends 7x7.
    net = run_net("vgg19-bn", 32)
    assert net.fixed_size
    assert net(torch.rand(1, 3, 224, 224)).shape == (1, 3)


@pytest.mark.parametrize("model_name, size, conv, alias", [
    ("transfer:vgg19", 32, "conv5_4", "backbone.layers.34"),
    ("transfer:efficientnet_lite0", 64, "blocks.10", "backbone.model.blocks.10"),
])
def test_transfer_runs_have_blocks_and_the_backbone_layer_names(model_name, size, conv, alias):
    net = run_net(model_name, size)
    blocks = net.block_outputs()
    assert len(blocks) >= 3 and all(net.info[b].spatial and net.info[b].shape[2] > 1 for b in blocks)
    layer = auto_layer(net, 0.4)
    assert layer in blocks
    image = torch.rand(1, 3, size, size)
    assert net.features(image, [layer])[layer].ndim == 4
    assert net.resolve(conv) == alias
    assert net.resolve("head") == "head"  # the run's own head, not the backbone's
    assert net(image).shape == (1, 3)


def test_see_inside_methods_default_to_a_runs_own_input_size():
    # A 32 px CIFAR run was shown 224 px images (7x the scale it learned; a transfer run, which
    # shrinks its input itself, gave a dot grid of backprojections). Unless --size says otherwise
    # the methods now use the run's size; ImageNet nets keep their defaults.
    from PIL import Image

    from convscope.nets import get_net
    from convscope.vis.activations import ActivationsConfig, activations
    from convscope.vis.explain import ExplainConfig, explain
    from convscope.vis.topact import TopActConfig, TopActivations

    net = run_net("simple", 32)
    photo = Image.new("RGB", (100, 80), (200, 30, 30))
    a = activations(photo, ActivationsConfig(device="cpu"), net=net)
    assert a.config.size == 32 and max(a.image.size) == 32
    assert max(activations(photo, ActivationsConfig(device="cpu", size=64), net=net).image.size) == 64
    e = explain(photo, ExplainConfig(device="cpu"), net=net)
    assert e.config.size == 32 and max(e.image.size) == 32
    assert TopActivations(TopActConfig(device="cpu"), net=net).config.size == 32
    vgg = get_net("vgg19", device="cpu")
    assert activations(photo, ActivationsConfig(device="cpu", layer="relu1_1"), net=vgg).config.size == 224
    assert TopActivations(TopActConfig(device="cpu"), net=vgg).config.size == 128

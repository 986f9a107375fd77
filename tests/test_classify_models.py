"""Classifier architectures: the reference shapes, pretrained initialization, transfer heads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convscope.classify.models import SimpleCNN, TransferModel, VGG19BN, build_model, check_model_name
from convscope.errors import ConfigError
from convscope.nets import get_net


def test_simple_is_exactly_the_reference():
    m = SimpleCNN(10)
    kinds = [type(x).__name__ for x in list(m.features) + list(m.classifier)]
    assert kinds == ["Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d", "Dropout",
                     "Flatten", "Linear", "ReLU", "Dropout", "Linear"]
    assert m.features[5].p == 0.25 and m.classifier[3].p == 0.5
    # Keras' count for this network on 32x32x3 inputs (3x3 'valid' convolutions): 1,626,442.
    assert sum(p.numel() for n, p in m.named_parameters()) == 1_626_442
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_vgg19_bn_starts_from_the_original_filters():
    """The first conv sees RGB normalized by mean/std instead of Caffe's BGR 0..255 minus means:
    after the conversion, its responses equal the original filter's up to a constant per channel
    (which BatchNorm absorbs)."""
    torch.manual_seed(0)
    model = VGG19BN(10).load_imagenet_convs().eval()
    caffe = get_net("vgg19")
    x = torch.rand(1, 3, 32, 32)
    ours = nn.functional.conv2d(model.normalize(x), model.features[0][0].weight)
    theirs = nn.functional.conv2d(caffe.preprocess(x), caffe.layers[0].weight)
    diff = (ours - theirs)[0]
    assert torch.allclose(diff, diff.mean(dim=(1, 2), keepdim=True), atol=1e-2 * theirs.abs().max().item())
    for mine, orig in zip([m for m in model.features.modules() if isinstance(m, nn.Conv2d)][1:],
                          [m for m in caffe.layers if isinstance(m, nn.Conv2d)][1:]):
        assert torch.equal(mine.weight, orig.weight)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_transfer_models_and_their_blocks():
    vgg = build_model("transfer:vgg19", 5, 64, hidden=(16,))
    assert vgg.feature_shape == (512, 2, 2) and len(vgg.backbone_blocks()) == 5
    assert vgg(torch.rand(2, 3, 32, 32)).shape == (2, 5)  # upsampled to 64 inside
    lite = build_model("transfer:efficientnet_lite0", 3, 224, hidden=(8,))
    assert isinstance(lite, TransferModel) and lite.feature_shape[0] == 1280
    assert len(lite.backbone_blocks()) == 18


def test_model_names_checked_with_suggestions():
    check_model_name("resnet18")
    check_model_name("vgg19_bn")  # torchvision's, at random init
    with pytest.raises(ConfigError, match="did you mean 'simple'"):
        check_model_name("simpel")
    with pytest.raises(ConfigError, match="transfer backbone"):
        check_model_name("transfer:resnet")
    with pytest.raises(ConfigError, match="at least 2 classes"):
        build_model("simple", 1)

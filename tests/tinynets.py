"""Test helper: the nets every vis method is checked on, including a 32 px CIFAR-style classifier.

The CIFAR nets of the classification issue load from their run folders (tests/test_classify_cli.py
runs the vis commands on a trained one); `cifar_net()` is the same model, `simple`, at random
initialization, wrapped the way a run folder is.
"""

from __future__ import annotations

import torch
from torch import nn

from convscope.nets import HookedNet, get_net

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR = "cifar-test"
# Every kind the issue names: original VGG19, EfficientNet-Lite0, a CIFAR net, torchvision models
# (random init: no downloads here).
NETS = ("vgg19", "efficientnet_lite0", CIFAR, "resnet18:random", "mobilenet_v3_small:random",
        "densenet121:random")


def cifar_net() -> HookedNet:
    """The classification issue's reference CIFAR-10 model (`simple`: Conv32-Conv64-MaxPool-Dense128-
    Dense10, its normalization inside) at a fixed random init, as the vis engines see a run folder."""
    from convscope.classify.models import SimpleCNN

    torch.manual_seed(0)
    net = HookedNet(SimpleCNN(10), nn.Identity(), CIFAR, 32, CIFAR_CLASSES)
    net.requires_grad_(False)
    return net.eval()


def make_get_net(real=get_net, cache: dict | None = None):
    """A `get_net` that knows CIFAR and builds each net once (runs never change a frozen net)."""
    cache = {} if cache is None else cache

    def get(name="vgg19", pooling="max", device="cpu", dtype=torch.float32):
        key = (name, pooling, str(device), dtype)
        if key not in cache:
            if name == CIFAR:
                net = cifar_net()
                cache[key] = (net.use_avg_pooling() if pooling == "avg" else net).to(device=device, dtype=dtype)
            else:
                cache[key] = real(name, pooling, device, dtype)
        return cache[key]

    return get

"""Test helper: the nets every vis method is checked on, including a 32 px CIFAR-style classifier.

The CIFAR nets of the classification issue load from their run directories; until a test can make
one cheaply, `cifar_net()` stands in: the same shape of network (conv-conv-pool-dense, 10 named
classes, 32 px input) as a `HookedNet` at random initialization.
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


class CifarSimple(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Dropout(0.5),
                                        nn.Linear(128, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


class CifarNormalize(nn.Module):
    def forward(self, x):
        return (x - 0.5) / 0.25


def cifar_net() -> HookedNet:
    torch.manual_seed(0)
    net = HookedNet(CifarSimple(), CifarNormalize(), CIFAR, 32, CIFAR_CLASSES)
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

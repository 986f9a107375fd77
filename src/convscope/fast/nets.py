"""Feed-forward style networks: the Johnson et al. image transformation net and AdaIN.

TransformerNet (Johnson, Alahi & Fei-Fei 2016): a 9x9 convolution, two stride-2 convolutions,
residual blocks at a quarter of the resolution, two resize-convolutions (nearest x2, then a 3x3
convolution: no checkerboard artifacts, Odena et al. 2016) and a 9x9 convolution to RGB, with
instance normalization (Ulyanov et al. 2016) throughout. Widths are configurable; the built-in
styles use a slim (16, 32, 48) version (the_scream with 8 residual blocks, the others 5), which runs
as fast as the TF-Lite-class models on a CPU.
Convolutions pad with zeros (fast on every backend); the image itself is reflection-padded once
at the input and cropped at the output, which removes the border artifacts zero padding would give.
HalfResTransformerNet computes the same function for CPU inference without full-resolution
16-channel maps (sub-pixel and space-to-depth forms of the last layers).

AdaIN (Huang & Belongie 2017): the original VGG19 up to relu4_1 encodes content and style; the
content features are renormalized to the style's channel means and stds; a decoder mirroring the
encoder (nearest upsampling instead of pooling) turns them back into an image. AdaIN-lite swaps the
VGG19 encoder for LiteEncoder, a narrow VGG19-shaped network trained to imitate relu4_1 (LiteAdaIN
holds both, so one model file carries them).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

# Border handed to the network by reflection and cropped off again (a multiple of 4, so the two
# stride-2 convolutions and the two upsamplings give back exactly the padded size).
BORDER = 16


def reduced_instance_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """Affine instance norm of x [N, C, H, W] as one var_mean reduction over H, W and one fused
    x * scale + shift. PyTorch's instance_norm parallelizes over N x C instances only (16 to 48 at
    batch 1 here, on a GPU with 132 multiprocessors); var_mean splits each large instance across many
    blocks. On an H100, 1024x768 in bf16: 3.4 ms per image at batch 1 instead of 5.6
    (bench/fast_gpu.py). Statistics in x's dtype: float32 ones took 4.1 ms and came no closer to the
    float32 network than PyTorch's bf16 kernel does."""
    var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
    scale = torch.rsqrt(var + eps) * weight.view(1, -1, 1, 1)
    return torch.addcmul(bias.view(1, -1, 1, 1) - mean * scale, x, scale)


class InstanceNorm(nn.InstanceNorm2d):
    """nn.InstanceNorm2d (affine; same parameters and file keys) that runs GPU inference as
    `reduced_instance_norm`; training and the CPU keep PyTorch's kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not x.is_cuda or x.dim() != 4:
            return super().forward(x)
        return reduced_instance_norm(x, self.weight, self.bias, self.eps)


def _conv_block(cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [("conv", nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2)),
              ("norm", InstanceNorm(cout, affine=True))]
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


def _pad_input(x: torch.Tensor) -> torch.Tensor:
    """Reflection-pad by BORDER, plus up to 3 pixels so both sides are multiples of 4."""
    h, w = x.shape[-2:]
    if torch.onnx.is_in_onnx_export():
        return _pad_input_traced(x)
    mode = "reflect" if min(h, w) > BORDER + 3 else "replicate"  # reflect needs pad < size
    return F.pad(x, (BORDER, BORDER + (-w) % 4, BORDER, BORDER + (-h) % 4), mode=mode)


def _pad_input_traced(x: torch.Tensor) -> torch.Tensor:
    """_pad_input as an index gather, for ONNX export: the Python `if` above would be frozen at the
    example's choice, and the file then failed in onnxruntime on frames with a side under 20 px
    (its reflect Pad needs pad < side). Here the rows and columns are picked per call, so both
    choices stay in the graph. Sizes are 0-d tensors while tracing, so they stay dynamic."""
    h, w = x.shape[-2:]
    reflect = torch.minimum(torch.as_tensor(h), torch.as_tensor(w)) > BORDER + 3
    return x.index_select(2, _pad_index(h, (-h) % 4, reflect)).index_select(3, _pad_index(w, (-w) % 4, reflect))


def _pad_index(n, extra, reflect: torch.Tensor) -> torch.Tensor:
    """Source rows (or columns) along an axis of length `n`: BORDER before, BORDER + `extra` after,
    reflected where `reflect` (a bool tensor) and replicated elsewhere."""
    i = torch.arange(-BORDER, n + BORDER + extra)
    mirrored = i.abs()
    mirrored = torch.where(mirrored > n - 1, 2 * (n - 1) - mirrored, mirrored)
    clamped = torch.where(i < 0, 0, torch.where(i > n - 1, n - 1, i))  # not clamp: int64 Clip needs opset 12
    return torch.where(reflect, mirrored, clamped)


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
        y = torch.sigmoid(self.layers(_pad_input(x)))
        return y[..., BORDER:BORDER + h, BORDER:BORDER + w]



def can_grow(small: TransformerNet, large: TransformerNet) -> bool:
    """Whether `large` has at least `small`'s channels at every stage and at least its residual blocks."""
    return (all(b >= a for a, b in zip(small.widths, large.widths))
            and large.residual_blocks >= small.residual_blocks)


@torch.no_grad()
def grow_into(small: TransformerNet, large: TransformerNet) -> None:
    """Load `small`'s weights into the larger `large` so that it computes the same function (growth
    for continued training: more residual blocks, wider stages). Each tensor of `small` goes into the
    leading corner of its counterpart; a kept output channel gets zero weights from every new input
    channel, so the new channels (random weights, as `large` was built) cannot change the old ones;
    new residual blocks start as the identity (their last instance norm's scale and shift are zero).
    All of these still receive gradients, so training can put the new capacity to use."""
    if not can_grow(small, large):
        raise ValueError(f"cannot grow widths {small.widths} x {small.residual_blocks} blocks into "
                         f"{large.widths} x {large.residual_blocks}")
    target = large.state_dict()
    for key, value in small.state_dict().items():
        out = target[key]
        corner = tuple(slice(0, n) for n in value.shape)
        if out.dim() == 4 and out.shape[1] > value.shape[1]:  # convolution with new input channels
            out[: value.shape[0], value.shape[1]:] = 0
        out[corner] = value.to(out.dtype)
    for i in range(small.residual_blocks, large.residual_blocks):
        norm = f"layers.res{i + 1}.block2.norm"
        target[f"{norm}.weight"].zero_()
        target[f"{norm}.bias"].zero_()
    large.load_state_dict(target)


# ---- the same network, computed on half-resolution grids (CPU inference) ---------------------
def _phase_map(kernel: int, taps: int, offset_of) -> torch.Tensor:
    """[2, 2, taps, kernel] 0/1 map: for output phase a and input phase e, which full-resolution
    kernel tap u lands on half-resolution tap d (offset_of(a, e, d) gives u, relative to the centre)."""
    m = torch.zeros(2, 2, taps, kernel)
    for a in range(2):
        for e in range(2):
            for d in range(taps):
                u = offset_of(a, e, d - taps // 2) + kernel // 2
                if 0 <= u < kernel:
                    m[a, e, d, u] = 1.0
    return m


def subpixel_upconv_weight(weight: torch.Tensor) -> torch.Tensor:
    """Weights [O, C, 3, 3] of a 3x3 convolution applied after nearest x2 upsampling -> [4O, C, 3, 3]
    of one 3x3 convolution on the small input whose output channel o*4 + a*2 + b is the result at
    phase (a, b) (pixel_shuffle's order). Nearest upsampling repeats each input pixel, so tap u of
    phase a reads input offset floor((a + u) / 2): the taps that read the same input pixel add up."""
    m = torch.zeros(2, 3, 3)  # [phase a, input offset d + 1, tap u + 1]
    for a in range(2):
        for u in (-1, 0, 1):
            m[a, (a + u) // 2 + 1, u + 1] = 1.0
    m = m.to(weight)
    k = torch.einsum("adu,bev,ocuv->oabcde", m, m, weight)
    return k.reshape(weight.shape[0] * 4, weight.shape[1], 3, 3)


def space_to_depth_conv_weight(weight: torch.Tensor) -> torch.Tensor:
    """Weights [O, C, k, k] (k odd, zero padding k // 2) -> [4O, 4C, t, t] of a convolution on
    pixel_unshuffle(x, 2) whose output pixel_shuffles back to the same result: full-resolution
    tap u of output phase a reads input phase e at half-resolution offset d where u = 2d + e - a."""
    k = weight.shape[-1]
    taps = 2 * ((k // 2 + 1) // 2) + 1
    m = _phase_map(k, taps, lambda a, e, d: 2 * d + e - a).to(weight)
    out = torch.einsum("aedu,bfgv,ocuv->oabcefdg", m, m, weight)
    return out.reshape(weight.shape[0] * 4, weight.shape[1] * 4, taps, taps)


class HalfResTransformerNet(nn.Module):
    """A TransformerNet's exact function (up to rounding), for inference: the two resize-
    convolutions become sub-pixel convolutions on the smaller grid (no upsampled copies), and the
    last stage never goes to full resolution: the 16-channel map stays as four phases on the
    half-resolution grid (instance norm over a channel's four phases is a group norm), and the 9x9
    convolution to RGB runs there as a 5x5 convolution with 4x the channels, then one pixel_shuffle.
    On a 2-core CPU in bf16 it ran a 512x384 image in ~75 ms against ~95-140 ms for the plain network
    (oneDNN is slow on the 3-channel 9x9 output and on the upsampled copies); the weights are derived
    once from the trained network."""

    def __init__(self, net: TransformerNet):
        super().__init__()
        layers = net.layers
        self.head = nn.Sequential(*[m for name, m in layers.named_children() if not name.startswith(("up", "out"))])

        def conv_of(block):
            return block.block.conv, block.block.norm

        (c1, n1), (c2, n2) = conv_of(layers.up1), conv_of(layers.up2)
        with torch.no_grad():
            self.up1_weight = nn.Parameter(subpixel_upconv_weight(c1.weight), requires_grad=False)
            self.up1_bias = nn.Parameter(c1.bias.repeat_interleave(4), requires_grad=False)
            self.up2_weight = nn.Parameter(subpixel_upconv_weight(c2.weight), requires_grad=False)
            self.up2_bias = nn.Parameter(c2.bias.repeat_interleave(4), requires_grad=False)
            self.norm2_weight = nn.Parameter(n2.weight.repeat_interleave(4), requires_grad=False)
            self.norm2_bias = nn.Parameter(n2.bias.repeat_interleave(4), requires_grad=False)
            self.out_weight = nn.Parameter(space_to_depth_conv_weight(layers.out.weight), requires_grad=False)
            self.out_bias = nn.Parameter(layers.out.bias.repeat_interleave(4), requires_grad=False)
        self.norm1, self.eps2, self.groups2 = n1, n2.eps, c2.out_channels
        self.out_pad = self.out_weight.shape[-1] // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = self.head(_pad_input(x))
        y = F.pixel_shuffle(F.conv2d(y, self.up1_weight, self.up1_bias, padding=1), 2)
        y = F.relu(self.norm1(y))
        y = F.conv2d(y, self.up2_weight, self.up2_bias, padding=1)  # phases of the full-resolution map
        y = F.relu(F.group_norm(y, self.groups2, self.norm2_weight, self.norm2_bias, self.eps2))
        y = F.pixel_shuffle(F.conv2d(y, self.out_weight, self.out_bias, padding=self.out_pad), 2)
        return torch.sigmoid(y)[..., BORDER:BORDER + h, BORDER:BORDER + w]

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


# ---- AdaIN-lite ------------------------------------------------------------------------------
LITE_WIDTHS = (16, 32, 64, 128)
LITE_CONVS = (2, 2, 4, 1)  # 3x3 convolutions per stage, as VGG19 has them up to relu4_1
# The lite model's decoder: a quarter of the paper's widths. At 512x512 on a 2-core CPU in bf16 the
# (128, 64, 32) decoder alone took ~0.10 s, (64, 32, 16) ~0.035 s (LiteEncoder: ~0.03 s).
LITE_DECODER_WIDTHS = (64, 32, 16)


def vgg19_preprocess() -> nn.Module:
    """The input preprocessing of the original VGG19 (the one `Encoder` copies), without its weights."""
    from ..nets.vgg import CaffePreprocess

    return CaffePreprocess()


class LiteEncoder(nn.Module):
    """A narrow VGG19-shaped network that imitates VGG19's relu4_1: the same preprocessing, 3x3
    convolutions + ReLU at `widths` channels with a 2x2 max pool between stages (1/8 resolution
    after three), then a 1x1 convolution to 512 channels + ReLU. Same interface as `Encoder`, but
    it returns relu4_1 only. `convs`: 3x3 convolutions per stage."""

    def __init__(self, widths: tuple[int, ...] = LITE_WIDTHS, convs: tuple[int, ...] = LITE_CONVS):
        super().__init__()
        if len(widths) != 4 or len(convs) != 4 or min(widths) < 1 or min(convs) < 1:
            raise ValueError(f"LiteEncoder takes 4 positive widths and 4 positive conv counts, not {widths}, {convs}")
        self.widths, self.convs = tuple(int(w) for w in widths), tuple(int(c) for c in convs)
        self.preprocess = vgg19_preprocess()
        layers: list[nn.Module] = []
        cin = 3
        for stage, (width, n) in enumerate(zip(self.widths, self.convs)):
            if stage:
                layers.append(nn.MaxPool2d(2, 2))
            for _ in range(n):
                layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True)]
                cin = width
        layers += [nn.Conv2d(cin, 512, 1), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers)
        # He initialization keeps the preprocessed input's scale (Caffe pixels) through the ReLUs;
        # PyTorch's default init shrank it ~100x, and the distillation stalled (relative error ~1).
        for m in self.layers:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, upto: str = "relu4_1") -> dict[str, torch.Tensor]:
        if upto != "relu4_1":
            raise ValueError(f"LiteEncoder computes relu4_1 only, not {upto}")
        return {"relu4_1": self.layers(self.preprocess(x))}


class LiteAdaIN(nn.Module):
    """AdaIN-lite: a LiteEncoder (content and style) and a Decoder, stored as one model."""

    def __init__(self, widths: tuple[int, int, int] = LITE_DECODER_WIDTHS,
                 encoder_widths: tuple[int, ...] = LITE_WIDTHS, encoder_convs: tuple[int, ...] = LITE_CONVS):
        super().__init__()
        self.encoder = LiteEncoder(encoder_widths, encoder_convs)
        self.decoder = Decoder(widths)

    @property
    def widths(self) -> tuple[int, ...]:
        return self.decoder.widths

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Content images styled by style images (alpha 1, one style each), as the decoder's raw output."""
        c = self.encoder(content)["relu4_1"]
        s = self.encoder(style)["relu4_1"]
        return self.decoder(adain(c, *channel_stats(s)))

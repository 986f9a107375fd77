"""A backbone whose every layer has a name.

A `Backbone` is a chain of modules (conv, relu, pool) with canonical names (conv1_1, relu1_1, pool1,
...) plus aliases (the Keras names block1_conv1, ...). It owns its preprocessing: callers always pass
RGB images in [0, 1], NCHW, and `features()` returns the activations of the layers asked for,
running the chain only up to the deepest of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..argcheck import check_image_batch
from ..errors import ConfigError, ImageError
from ..options import suggest  # noqa: F401  (re-exported: nets.base.suggest)


def layer_list(layers: str | Iterable[str]) -> list[str]:
    """The layer names asked for; one name given as a plain string is one layer (not its letters)."""
    if isinstance(layers, str):
        return [layers]
    names = list(layers) if isinstance(layers, Iterable) else None
    if names is None or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"layers must be a layer name or a list of them, such as ['relu1_1'], not {layers!r}")
    return names


def checked_input(net: nn.Module, image, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`image` as `net` can run it: an RGB batch [N, 3, H, W] of floats on the net's device (a
    one-line ImageError or ConfigError otherwise), in `dtype`, by default the net's float dtype
    (float64 from numpy would fail deep in a conv). Metadata only: engines call features() every
    iteration."""
    check_image_batch(image, f"the image batch for {getattr(net, 'net_name', 'the net')}")
    param = next(net.parameters(), None)
    if param is not None:
        if image.device != param.device:
            raise ConfigError(f"the image batch is on {image.device} but the net on {param.device}; "
                              f"move one of them: image.to({str(param.device)!r}) or net.to(...)")
        if dtype is None:
            dtype = param.dtype
    if dtype is not None and image.dtype != dtype:
        image = image.to(dtype)
    return image


class _ReluBf16(torch.autograd.Function):
    """In-place ReLU of a bfloat16 CPU tensor, computed on its bits as int16.

    A bfloat16's sign is its top bit, so clamping the int16 view at 0 zeroes exactly the negative
    values (and -0.0), leaving the rest bit for bit: the same result as F.relu, which on the CPU
    converts every bf16 value to float32 and back (measured: 3.8-4.6x slower than the int16 clamp
    in place on a 16x64x128x128 map, idle 2-core Xeon with AMX; the ReLUs were ~12% of a featureviz
    step). A NaN
    with its sign bit set becomes 0 here; such a NaN came from a NaN input, which other positions
    still carry. The backward is autograd's own ReLU backward (grad where the output is > 0)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x.view(torch.int16).clamp_min_(0)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, out, 0)


def relu(x: torch.Tensor, inplace: bool) -> torch.Tensor:
    """F.relu, by _ReluBf16 for bfloat16 on the CPU (the same values, about 4x faster there)."""
    if x.dtype != torch.bfloat16 or x.device.type != "cpu":
        return F.relu(x, inplace=inplace)
    if not inplace:
        x = x.clone()
    if torch.is_grad_enabled() and x.requires_grad:
        return _ReluBf16.apply(x)
    x.view(torch.int16).clamp_min_(0)
    return x


class Backbone(nn.Module):
    """A sequential CNN with named layers and its own input normalization.

    Args:
        names: canonical layer names, in order, one per module.
        modules: the modules, same length as `names`.
        aliases: extra names -> canonical names.
        preprocess: maps RGB [0, 1] NCHW to what the weights expect.
        net_name: registry name, for messages.
    """

    def __init__(self, names: Sequence[str], modules: Sequence[nn.Module],
                 aliases: dict[str, str], preprocess: nn.Module, net_name: str):
        super().__init__()
        if len(names) != len(modules):
            raise ValueError("one name per module")
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.aliases = dict(aliases)
        self.layers = nn.ModuleList(modules)
        self.preprocess = preprocess
        self.net_name = net_name
        self.memory_format = torch.contiguous_format
        self.num_classes: int | None = None      # convolutional part only: no classifier head
        self.classes: list[str] | None = None

    def use_channels_last(self, enabled: bool = True) -> Backbone:
        """NHWC activations (and weights): the layout tensor cores and oneDNN prefer."""
        self.memory_format = torch.channels_last if enabled else torch.contiguous_format
        return self.to(memory_format=self.memory_format)

    def cast_layers(self, dtype: torch.dtype) -> Backbone:
        """The layers' weights in `dtype` (bfloat16 for runs under bf16 autocast); the image is
        still taken and preprocessed in the preprocessing's dtype, then cast to `dtype`.

        Under autocast that is the same arithmetic, done once: autocast casts a frozen net's
        float32 weights again on every forward (its cast cache keeps only leaves that require
        grad), 15M values per style-transfer iteration up to relu5_2 (measured: the demo's forward
        + backward 1.14x faster; 2-core Xeon with AMX)."""
        self.layers.to(dtype)
        return self

    # ---- names -------------------------------------------------------------------------------
    def resolve(self, name: str) -> str:
        """Canonical name of `name` (canonical or alias); ConfigError with a suggestion otherwise."""
        if name in self.index:
            return name
        if name in self.aliases:
            return self.aliases[name]
        known = self.names + list(self.aliases)
        raise ConfigError(
            f"unknown layer {name!r} for net {self.net_name!r}{suggest(name, known)}; "
            f"list them with: convscope layers --net {self.net_name}")

    def stride_of(self, names: Iterable[str]) -> int:
        """Input pixels per output pixel at the deepest of `names`: the smallest side an image
        may have for those layers to exist (each 2x2 pooling halves the size, flooring)."""
        deepest = max(self.index[self.resolve(n)] for n in names)
        pools = sum(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in self.layers[:deepest + 1])
        return 2 ** pools

    def display_name(self, canonical: str) -> str:
        return canonical

    def order_of(self, name: str) -> int:
        """Position of layer `name` in the chain (for "is A before B")."""
        return self.index[self.resolve(name)]

    def channels_of(self, name: str) -> int:
        """Output channels of layer `name`."""
        channels = 3
        for module in self.layers[:self.index[self.resolve(name)] + 1]:
            if isinstance(module, nn.Conv2d):
                channels = module.out_channels
        return channels

    def block_outputs(self) -> list[str]:
        """The last activation before each pooling layer: one per block (relu1_2 ... relu5_4 for vgg19)."""
        found, last = [], None
        for name, module in zip(self.names, self.layers):
            if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
                if last is not None:
                    found.append(last)
                last = None
            elif isinstance(module, (nn.ReLU, nn.Conv2d)):
                # A ReLU supersedes its conv; a conv with no ReLU after it is its block's output.
                last = name
        return found + ([last] if last is not None else [])

    def default_cam_layer(self) -> str:
        """The last block output: the deepest spatial layer before the (absent) classifier."""
        return self.block_outputs()[-1]

    def layer_table(self) -> list[dict]:
        """One row per layer: name, kind, aliases, output channels and stride (for `convscope layers`)."""
        by_target: dict[str, list[str]] = {}
        for alias, target in self.aliases.items():
            by_target.setdefault(target, []).append(alias)
        rows, channels, stride = [], 3, 1
        for name, module in zip(self.names, self.layers):
            if isinstance(module, nn.Conv2d):
                channels = module.out_channels
            if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
                stride *= 2
            rows.append({"name": name, "kind": type(module).__name__, "channels": channels,
                         "stride": stride, "aliases": by_target.get(name, [])})
        return rows

    # ---- forward -----------------------------------------------------------------------------
    def features(self, image: torch.Tensor, layers: Iterable[str]) -> dict[str, torch.Tensor]:
        """Activations of `layers` (canonical or alias names) for RGB [0, 1] `image` [N, 3, H, W].

        Only the chain up to the deepest requested layer runs. The returned dict is keyed by the
        names as given. ReLUs run in place unless the tensor they would overwrite was requested.
        The batch's shape, dtype and device are checked, its values not (optimization loops pass
        iterates slightly outside [0, 1], and a check would cost a pass every call).
        """
        wanted: dict[str, list[str]] = {}  # canonical -> the names it was asked for by
        for n in layer_list(layers):
            wanted.setdefault(self.resolve(n), []).append(n)
        if not wanted:
            return {}
        # Preprocessing in its own dtype (its buffers'), the layers in theirs: they differ after
        # cast_layers, as autocast would have it (the Caffe means are not bf16 numbers).
        buffer = next(self.preprocess.buffers(), None)
        image = checked_input(self, image, None if buffer is None else buffer.dtype)
        last = max(self.index[c] for c in wanted)
        need = self.stride_of(wanted)
        if min(image.shape[-2:]) < need:  # a pooling would get an empty grid: a torch error deep inside
            h, w = image.shape[-2:]
            raise ImageError(f"a {w}x{h} image is too small for layer {self.names[last]} of {self.net_name}: "
                             f"it needs at least {need} pixels a side; use a larger image or a shallower layer")
        weight = next(self.layers.parameters(), None)
        x = self.preprocess(image).to(image.dtype if weight is None else weight.dtype,
                                      memory_format=self.memory_format)
        out: dict[str, torch.Tensor] = {}
        kept_previous = False
        for i in range(last + 1):
            module = self.layers[i]
            if isinstance(module, nn.ReLU):
                # In place saves memory and time, but would clobber a requested conv output.
                x = relu(x, inplace=not kept_previous)
            else:
                x = module(x)
            name = self.names[i]
            kept_previous = name in wanted
            if kept_previous:
                out.update(dict.fromkeys(wanted[name], x))
        return out

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.features(image, [self.names[-1]])[self.names[-1]]

"""Any `nn.Module` classifier as a backbone with named layers, through forward hooks.

`HookedNet` gives an arbitrary network (a torchvision ResNet, DenseNet, MobileNet, EfficientNet-Lite0,
a CIFAR net) the interface of `Backbone`: every submodule is a layer named by its module path
(`layer4.1.conv2`, `blocks.3`, `features.10`), plus `logits` for the model's output and optional
aliases. A probe forward at construction records each layer's output shape, its order of completion
and how often it runs (a ReLU module reused inside a residual block runs twice; a layer's
activation is that of its last call). `features()` hooks only the layers asked for, stops the forward
as soon as the deepest of them has run, and removes its hooks whatever happens, so calling it any
number of times leaves the model exactly as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..options import LOGITS  # the classifier's output, as a layer name
from .base import checked_input, layer_list, suggest


class _Stop(Exception):
    """Raised from a hook once the deepest requested layer has run: the rest of the forward is skipped.
    It carries the call that raised it, so a HookedNet inside the model (a run's transfer backbone)
    lets an outer call's stop pass instead of taking it for its own."""


@dataclass(frozen=True)
class LayerInfo:
    name: str
    kind: str                   # module class name
    shape: tuple[int, ...]      # output shape at the probe size, batch of 1
    calls: int                  # times the module runs in one forward
    order: int                  # position of its last completion in the forward

    @property
    def spatial(self) -> bool:
        return len(self.shape) == 4


class HookedNet(nn.Module):
    """A classifier whose submodules are addressable layers (see the module docstring).

    Args:
        model: the network; called with preprocessed NCHW images, returns logits [N, classes].
        preprocess: RGB [0, 1] -> what the weights expect.
        net_name: registry name, for messages.
        input_size: the side the network was trained at (224 ImageNet, 32 CIFAR); probe and defaults.
        classes: class names, index -> name (None: unnamed).
        aliases: extra layer names -> module paths.
        blocks: module paths of the block outputs (the `all-conv` set); default: top-level children
            with spatial outputs.
    """

    def __init__(self, model: nn.Module, preprocess: nn.Module, net_name: str, input_size: int = 224,
                 classes: Sequence[str] | None = None, aliases: dict[str, str] | None = None,
                 blocks: Sequence[str] | None = None):
        super().__init__()
        for module in model.modules():
            # In-place activations would overwrite a conv output a caller asked for; autograd
            # needs the copy anyway when gradients flow through a requested layer.
            if hasattr(module, "inplace") and isinstance(module.inplace, bool):
                module.inplace = False
        self.model = model
        self.preprocess = preprocess
        self.net_name = net_name
        self.input_size = input_size
        self.memory_format = torch.contiguous_format
        self.info = self._probe()
        self._min_side: dict[str, int] = {}
        # Twice the size: 1.5x can floor to the same final grid (48 px through five 2x2 poolings is
        # 1x1, as 32 px is), and a Flatten + Linear head then passes the probe and fails on 224 px.
        self.fixed_size = not self._runs_at(self.input_size * 2)
        self.names = list(self.info)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.aliases = {LOGITS: "", **(aliases or {})}
        self._modules_by_name = dict(model.named_modules())
        out_features = self.info[""].shape
        self.num_classes = out_features[1] if len(out_features) == 2 else None
        if classes is not None and self.num_classes is not None and len(classes) != self.num_classes:
            raise ValueError(f"{len(classes)} class names for {self.num_classes} outputs")
        self.classes = list(classes) if classes is not None else None
        # Given blocks the probe saw no spatial output of (a transfer backbone's deepest stages are
        # 1x1 or never run at a small input size) are dropped, as the default ones would be.
        self._blocks = ([b for b in blocks if self._is_block(b)] if blocks is not None
                        else self._default_blocks())

    # ---- probe -------------------------------------------------------------------------------
    def _probe(self) -> dict[str, LayerInfo]:
        shapes: dict[str, tuple[int, ...]] = {}
        calls: dict[str, int] = {}
        finished: list[str] = []
        handles = []

        def hook(name):
            def record(module, args, output):
                if isinstance(output, torch.Tensor):
                    shapes[name] = tuple(output.shape)
                    calls[name] = calls.get(name, 0) + 1
                    finished.append(name)
            return record

        kinds = {}
        for name, module in self.model.named_modules():
            kinds[name] = type(module).__name__
            handles.append(module.register_forward_hook(hook(name)))
        try:
            param = next(self.model.parameters(), None)
            x = torch.zeros(1, 3, self.input_size, self.input_size,
                            device=param.device if param is not None else "cpu",
                            dtype=param.dtype if param is not None else torch.float32)
            with torch.no_grad():
                self.model.eval()(self.preprocess(x))
        finally:
            for h in handles:
                h.remove()
        last = {name: i for i, name in enumerate(finished)}  # position of the last completion
        ordered = sorted(last, key=last.get)
        return {n: LayerInfo(n or LOGITS, kinds[n], shapes[n], calls[n], last[n]) for n in ordered}

    def _default_blocks(self) -> list[str]:
        """Top-level children with a spatial output larger than 1x1 that contain a convolution; a
        long Sequential (torchvision's `features`) stands for its children instead."""
        def has_conv(module: nn.Module) -> bool:
            return any(isinstance(m, nn.Conv2d) for m in module.modules())

        candidates = []
        for name, child in self.model.named_children():
            if isinstance(child, nn.Sequential) and len(child) >= 3 and len(list(self.model.children())) <= 4:
                candidates += [(f"{name}.{n}", c) for n, c in child.named_children()]
            else:
                candidates.append((name, child))
        return [n for n, m in candidates if self._is_block(n) and has_conv(m)]

    def _is_block(self, name: str) -> bool:
        """Whether layer `name` ran in the probe with a spatial output larger than 1x1."""
        return name in self.info and self.info[name].spatial and self.info[name].shape[2] > 1

    def use_avg_pooling(self) -> HookedNet:
        """Every max-pooling layer becomes an average pooling of the same geometry (as Gatys et al.
        do for textures and style); names and shapes are unchanged."""
        for parent in list(self.model.modules()):
            for child_name, child in parent.named_children():
                if isinstance(child, nn.MaxPool2d):
                    setattr(parent, child_name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding,
                                                             ceil_mode=child.ceil_mode))
        self._modules_by_name = dict(self.model.named_modules())
        self.info = {n: LayerInfo(i.name, type(self._modules_by_name[n]).__name__ if n else i.kind, i.shape,
                                  i.calls, i.order) for n, i in self.info.items()}
        return self

    def _runs_at(self, side: int) -> bool:
        """Whether the whole net accepts `side` x `side` inputs (a Flatten + Linear head does not)."""
        param = next(self.model.parameters(), None)
        x = torch.zeros(1, 3, side, side, device=param.device if param is not None else "cpu",
                        dtype=param.dtype if param is not None else torch.float32)
        try:
            with torch.no_grad():
                self.model(self.preprocess(x))
        except RuntimeError:
            return False
        return True

    # ---- names -------------------------------------------------------------------------------
    def resolve(self, name: str) -> str:
        """The module path of `name` (a path, `logits` or an alias); ConfigError with a suggestion."""
        if name in self.aliases:
            return self.aliases[name]
        if name in self.info and name != "":
            return name
        known = [n for n in self.names if n] + list(self.aliases)
        raise ConfigError(
            f"unknown layer {name!r} for net {self.net_name!r}{suggest(name, known)}; "
            f"list them with: convscope layers --net {self.net_name}")

    def _canonical(self, name: str) -> str:
        """resolve(), but a canonical name passes as it is: "" (logits) too, which resolve() refuses
        as a user's --layer. Callers hand back what resolve() gave them (dream, activations)."""
        return name if name in self.info else self.resolve(name)

    def display_name(self, canonical: str) -> str:
        return canonical or LOGITS

    def order_of(self, name: str) -> int:
        """Position of layer `name` in the forward pass (for "is A before B")."""
        return self.info[self._canonical(name)].order

    def channels_of(self, name: str) -> int:
        shape = self.info[self._canonical(name)].shape
        return shape[1] if len(shape) >= 2 else 1

    def stride_of(self, names: Iterable[str]) -> int:
        """The smallest image side for which the deepest of `names` exists: the larger of its input
        pixels per output pixel (at the probe size) and the smallest side the forward up to it
        accepts (found once per layer by bisection: some nets, AlexNet say, fail on small inputs)."""
        deepest = max((self._canonical(n) for n in names), key=lambda n: self.info[n].order)
        if deepest not in self._min_side:
            order = self.info[deepest].order
            # Layers that are 1x1 at the probe size (global pools, squeeze-excitation) do not count.
            strides = [self.input_size // i.shape[2] for i in self.info.values()
                       if i.spatial and i.order <= order and i.shape[2] > 1]
            self._min_side[deepest] = max(max(strides, default=1), self._smallest_runnable(deepest))
        return self._min_side[deepest]

    def _smallest_runnable(self, layer: str) -> int:
        param = next(self.parameters(), None)

        def runs(side: int) -> bool:
            x = torch.zeros(1, 3, side, side, device=param.device if param is not None else "cpu",
                            dtype=param.dtype if param is not None else torch.float32)
            try:
                with torch.no_grad():
                    y = self.features(x, [layer or LOGITS])[layer or LOGITS]
            except RuntimeError:
                return False
            return y.ndim != 4 or min(y.shape[2:]) >= 1

        low, high = 1, self.input_size  # the probe size runs
        while low < high:
            mid = (low + high) // 2
            if runs(mid):
                high = mid
            else:
                low = mid + 1
        return low

    def layer_table(self) -> list[dict]:
        by_target: dict[str, list[str]] = {}
        for alias, target in self.aliases.items():
            by_target.setdefault(target, []).append(alias)
        rows = []
        for name, i in self.info.items():
            rows.append({"name": name or LOGITS, "kind": i.kind,
                         "channels": i.shape[1] if len(i.shape) >= 2 else 1,
                         "stride": self.input_size // i.shape[2]
                         if i.spatial and (i.shape[2] > 1 or not i.kind.startswith("Adaptive")) else None,
                         "aliases": [a for a in by_target.get(name, []) if a != LOGITS]})
        return rows

    def block_outputs(self) -> list[str]:
        """One layer per block, in order: the `all-conv` set of the activations command."""
        return list(self._blocks)

    def default_cam_layer(self) -> str:
        """The last layer with a spatial output larger than 1x1 at the probe size: the Grad-CAM layer."""
        spatial = [n for n, i in self.info.items() if i.spatial and i.shape[2] * i.shape[3] > 1]
        if not spatial:
            raise ConfigError(f"net {self.net_name!r} has no spatial layer for Grad-CAM")
        return spatial[-1]

    # ---- forward -----------------------------------------------------------------------------
    def use_channels_last(self, enabled: bool = True) -> HookedNet:
        self.memory_format = torch.channels_last if enabled else torch.contiguous_format
        return self.to(memory_format=self.memory_format)

    def features(self, image: torch.Tensor, layers: Iterable[str]) -> dict[str, torch.Tensor]:
        """Activations of `layers` for RGB [0, 1] `image` [N, 3, H, W], keyed by the names as given
        (shape, dtype and device checked, values not: see Backbone.features)."""
        wanted: dict[str, list[str]] = {}
        for n in layer_list(layers):
            wanted.setdefault(self._canonical(n), []).append(n)
        if not wanted:
            return {}
        image = checked_input(self, image)
        if self.fixed_size and tuple(image.shape[-2:]) != (self.input_size,) * 2 and \
                any(not self.info[n].spatial for n in wanted):
            # A head that flattens a fixed grid (Flatten + Linear) only takes its training size: the
            # image is resized to it, differentiably, so gradients still reach every input pixel.
            image = F.interpolate(image, size=(self.input_size,) * 2, mode="bilinear", align_corners=False,
                                  antialias=image.shape[-1] > self.input_size)
        x = self.preprocess(image).contiguous(memory_format=self.memory_format)
        if "" in wanted and len(wanted) == 1:
            y = self.model(x)
            return dict.fromkeys(wanted[""], y)
        deepest = max(wanted, key=lambda n: self.info[n].order)
        captured: dict[str, torch.Tensor] = {}
        calls = dict.fromkeys(wanted, 0)
        this_call = object()

        def hook(name):
            def capture(module, args, output):
                calls[name] += 1
                if name == deepest and calls[name] == self.info[name].calls:
                    captured[name] = output
                    raise _Stop(this_call)
                captured[name] = output
                # The rest of the forward runs on a copy: a later in-place op of the parent
                # (x += identity) would overwrite the activation, and gradients still reach it.
                return output.clone()
            return capture

        handles = [self._modules_by_name[n].register_forward_hook(hook(n)) for n in wanted if n != ""]
        try:
            if deepest == "":
                captured[""] = self.model(x)
            else:
                self.model(x)
        except _Stop as stop:
            if stop.args[0] is not this_call:  # an outer call's: not ours to catch
                raise
        finally:
            for h in handles:
                h.remove()
        out: dict[str, torch.Tensor] = {}
        for canonical, asked in wanted.items():
            out.update(dict.fromkeys(asked, captured[canonical]))
        return out

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.features(image, [LOGITS])[LOGITS]


def hook_count(module: nn.Module) -> int:
    """Forward, pre-forward and backward hooks on `module` and its submodules (tests check it stays 0)."""
    total = 0
    for m in module.modules():
        total += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        total += len(getattr(m, "_backward_pre_hooks", {}))
    return total

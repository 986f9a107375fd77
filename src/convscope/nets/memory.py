"""How much memory a net's pass holds, per pixel of its input, read off two small probe images:
so that an engine can refuse, before any work, an image that cannot fit (`devices.check_fits`),
for any net, not only the VGG19 the optimization engines' constant was measured on.

The figures are lower bounds. A forward pass holds at least its largest layer's input and
output at once (a layer that writes into its input counts once). A pass that will be
differentiated holds, at the end of its forward, every tensor autograd saved for the backward
(read through torch.autograd.graph.saved_tensors_hooks, each storage once). The gradients, the
convolutions' scratch space and the caller's own tensors come on top, so a size refused by them
could not have run. Per pixel means the growth from a side of s to 2s, divided by the pixels
added: the weights (which autograd saves too) and other fixed costs drop out. Run the probe
under the precision the pass will use: bf16 activations take half the bytes of float32 ones.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def _storages(value) -> dict[int, int]:
    """Storage address -> bytes of the tensors in `value` (a tensor, or a tuple/list of them)."""
    tensors = [value] if isinstance(value, torch.Tensor) else \
        [v for v in value if isinstance(v, torch.Tensor)] if isinstance(value, (tuple, list)) else []
    return {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}


def _held(net: nn.Module, layers: list[str], side: int, backward: bool) -> int:
    """Bytes the pass holds at its fullest (see the module docstring) for one side x side image."""
    largest, saved = 0, {}

    def record(module, args, output) -> None:
        nonlocal largest
        largest = max(largest, sum({**_storages(args), **_storages(output)}.values()))  # (in place: once)

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.update(_storages(t))
        return t

    param = next(net.parameters(), None)
    leaves = [m for m in net.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        x = torch.zeros(1, 3, side, side, device=param.device if param is not None else "cpu",
                        requires_grad=backward)
        with torch.set_grad_enabled(backward), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            net.features(x, layers)
    finally:
        for h in handles:
            h.remove()
    return max(largest, sum(saved.values()))


def bytes_per_pixel(net: nn.Module, layers: Iterable[str], backward: bool = False, side: int = 64) -> float:
    """Bytes per input pixel, at the least, that `net.features(image, layers)` holds: for the
    forward alone, or (`backward`) with what a backward pass through it needs kept; measured
    between sides `side` and twice that (at least the layers' stride) on the net's device, in its
    weights' dtype or under the autocast in force."""
    layers = list(layers)
    side = max(int(side), net.stride_of(layers))
    grown = _held(net, layers, 2 * side, backward) - _held(net, layers, side, backward)
    return max(0.0, grown / (3 * side * side))

"""How much memory a net's forward pass holds at once, per pixel of its input, read off a small
probe image: so that an engine can refuse, before any work, an image that cannot fit
(`devices.check_fits`), for any net, not only the VGG19 the optimization engines' constant was
measured on.

The figure is a lower bound: at the moment a layer returns, its input and its output both exist,
so the pass needs at least the largest such pair (a layer that writes into its input counts once).
Everything else a pass keeps (a backward pass's saved activations, the layers asked for, the
convolutions' scratch space) comes on top, so a size refused by it could not have run. Run it
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


@torch.no_grad()
def forward_bytes_per_pixel(net: nn.Module, layers: Iterable[str], side: int = 64) -> float:
    """Bytes per input pixel that `net.features(image, layers)` holds at its fullest step, at the
    least (see the module docstring), measured on a `side` x `side` image (at least the layers'
    stride) on the net's device, in its weights' dtype or under the autocast in force."""
    layers = list(layers)
    side = max(int(side), net.stride_of(layers))
    param = next(net.parameters(), None)
    largest = 0

    def record(module, args, output) -> None:
        nonlocal largest
        inputs, outputs = _storages(args), _storages(output)
        largest = max(largest, sum({**inputs, **outputs}.values()))  # (in place: one storage)

    leaves = [m for m in net.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        x = torch.zeros(1, 3, side, side, device=param.device if param is not None else "cpu")
        net.features(x, layers)
    finally:
        for h in handles:
            h.remove()
    return largest / (side * side)

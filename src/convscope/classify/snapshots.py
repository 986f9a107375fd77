"""Feature evolution during training (`--snapshots`): each epoch, the first layer's filters and one
layer's activations for a fixed image, and a figure with a row per epoch (Zeiler & Fergus, fig. 4)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..nets import AUTO, HookedNet

MAX_ROWS = 8        # epochs shown (evenly spaced, first and last included)
CHANNELS = 8        # activation maps shown per epoch (most active at the last epoch)


@dataclass
class Snapshot:
    epoch: int
    filters: torch.Tensor       # [C, 3, k, k] first convolution's weights (CPU float)
    activations: torch.Tensor   # [C', h, w] the layer's maps for the fixed image
    layer: str


def first_conv(model: nn.Module) -> nn.Conv2d | None:
    return next((m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3), None)


def auto_layer(model: nn.Module, net: HookedNet) -> str:
    """What --snapshot-layer auto records: the first block's output whose convolutions learn (not
    resnet-fast's fixed patch whitening, whose maps hardly change). A transfer model has no blocks
    of its own (its backbone runs inside `bottleneck`): there, the output of the first backbone block
    that trains (--finetune N), the first one whose maps can change."""
    from ..errors import ConfigError
    from .models import TransferModel

    modules = dict(model.named_modules())

    def learns(name: str) -> bool:  # a convolution whose filters train (not resnet-fast's fixed whitening)
        return any(isinstance(m, nn.Conv2d) and m.weight.requires_grad for m in modules[name].modules())

    blocks = net.block_outputs()
    if blocks:
        return next((b for b in blocks if b in modules and learns(b)), blocks[0])
    if isinstance(model, TransferModel):
        names = {id(m): n for n, m in model.named_modules()}
        for block in model.backbone_blocks():
            if any(p.requires_grad for p in block.parameters()):
                last = block[-1] if isinstance(block, nn.ModuleList) else block  # a VGG stage ends in its pool
                if names.get(id(last)) in net.info:
                    return names[id(last)]
    spatial = [n for n in net.names if n and net.info[n].spatial]
    if not spatial:
        raise ConfigError(f"{net.net_name} has no layer with activation maps for --snapshots")
    return spatial[0]


def check_layer(model: nn.Module, layer: str, input_size: int, model_name: str) -> None:
    """ConfigError (one line) before training when --snapshot-layer names no layer of `model` (or
    auto finds none)."""
    from ..errors import ConfigError
    from ..nets.base import suggest

    net = HookedNet(model, nn.Identity(), model_name, input_size)
    if layer == AUTO:
        auto_layer(model, net)
        return
    try:
        net.resolve(layer)
    except ConfigError:
        from .models import SCRATCH

        known = [n for n in net.names if n] + list(net.aliases)
        listing = (f"convscope layers --net {model_name}" if model_name in SCRATCH
                   else "convscope layers --net RUN_DIR, once a run of this model exists")
        raise ConfigError(f"--snapshot-layer {layer!r} is not a layer of {model_name}{suggest(layer, known)}; use "
                          f"auto, or a block such as {', '.join(net.block_outputs()[:4])} (all of them: "
                          f"{listing})") from None


@torch.no_grad()
def capture(model: nn.Module, image: torch.Tensor, layer: str, epoch: int, input_size: int) -> Snapshot:
    """`image`: float [1, 3, H, W] in [0, 1] on the model's device. Leaves the model's mode as it was."""
    was_training = model.training
    model.eval()
    try:
        net = HookedNet(model, nn.Identity(), "training", input_size)
        name = auto_layer(model, net) if layer == AUTO else layer
        maps = net.features(image, [name])[name][0].float().cpu()
    finally:
        model.train(was_training)
    conv = first_conv(model)
    filters = conv.weight.detach().float().cpu().clone() if conv is not None else torch.zeros(0, 3, 1, 1)
    return Snapshot(epoch, filters, maps if maps.ndim == 3 else maps.view(-1, 1, 1), name)


def _filter_grid(filters: torch.Tensor, columns: int = 8) -> np.ndarray:
    """First-layer filters as RGB tiles, each scaled to its own range, in a grid with 1 px gaps."""
    n = min(filters.shape[0], 32)
    if n == 0:
        return np.ones((1, 1, 3))
    k = filters.shape[-1]
    rows = -(-n // columns)
    grid = np.ones((rows * (k + 1) - 1, columns * (k + 1) - 1, 3), dtype=np.float32)
    for i in range(n):
        f = filters[i].permute(1, 2, 0).numpy()
        f = (f - f.min()) / max(float(f.max() - f.min()), 1e-12)
        r, c = divmod(i, columns)
        grid[r * (k + 1):r * (k + 1) + k, c * (k + 1):c * (k + 1) + k] = f
    return grid


def evolution_figure(snaps: list[Snapshot], image: Image.Image) -> Image.Image:
    from ..figures import render

    if len(snaps) > MAX_ROWS:
        picks = np.linspace(0, len(snaps) - 1, MAX_ROWS).round().astype(int)
        snaps = [snaps[i] for i in sorted(set(picks.tolist()))]
    last = snaps[-1].activations
    channels = last.flatten(1).mean(1).argsort(descending=True)[:CHANNELS].tolist()

    def draw(fig) -> None:
        cols = 2 + len(channels)
        axes = fig.subplots(len(snaps), cols, squeeze=False)
        for row, s in zip(axes, snaps):
            row[0].imshow(image)
            row[0].set_ylabel(f"epoch {s.epoch}", fontsize=9)
            row[1].imshow(_filter_grid(s.filters), interpolation="nearest")
            for ax, c in zip(row[2:], channels):
                ax.imshow(s.activations[c].numpy(), cmap="viridis")
            for ax in row:
                ax.set_xticks([])
                ax.set_yticks([])
        axes[0][0].set_title("image", fontsize=9)
        axes[0][1].set_title("first-layer filters", fontsize=9)
        for ax, c in zip(axes[0][2:], channels):
            ax.set_title(f"ch {c}", fontsize=8)  # the layer once, above: long paths overlapped here
        fig.suptitle(f"feature evolution during training: {snaps[0].layer}", fontsize=11)

    return render(draw, (1.3 * (2 + len(channels)) + 1, 1.3 * len(snaps) + 0.8))

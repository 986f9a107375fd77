"""Top activations over a folder of images, with deconvnet projections (Zeiler & Fergus 2014, fig. 2).

For each channel of a layer asked for: the k images of a folder (and the patch of each at the
unit's receptive field) where the channel fires most, next to the deconvnet projection of that one
activation back to the pixels. Two passes:

1. Scan: the folder streams through the net in batches (no gradients), images loaded by a background
   thread while the previous batch runs. Per image and channel only the maximum over positions is
   kept, merged into a running top-k per channel, so memory is O(channels * k), not O(images); at
   most two batches of pixels exist at any time (the one in the forward pass and the one loading).
   Unreadable images are skipped and counted.
2. Project: each winner is reloaded and its single activation (channel, row, col) projected to the
   pixels by the deconvnet (attribution's "deconvnet" backward rule, several winners per pass);
   image and projection are cropped to the unit's receptive field, which is measured once per
   (net, layer) from gradients (see `receptive_field`).

Engine only: paths in, a result with PIL tiles out, progress through a callback. The folder's
files are found and streamed by `imagefolder`; `topact_sheet` draws the figure and the record.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from .. import images
from ..argcheck import callback_or_none, check_loaded_net, config_of
from ..devices import default_precision
from ..errors import ConfigError, ImageError
from ..nets import AUTO, auto_layer, flat_shape, natural_side
from ..optimize import precision_mode
from .attribution import backward_rule
from .configs import TopActConfig, parse_channels
from .imagefolder import Batch, find_images, load_square, relative_name, stream_batches
from .loadnet import engine_net
from .receptive import ReceptiveField, receptive_field  # noqa: F401 (part of this module's API)

# The config and its limits live in vis.configs (torch-free, for the CLI).
# 128 px: vgg19 to relu3_4 measured ~22 ms per image (bf16, 2 busy CPU cores) against ~235 ms at
# 224 px, so a 1000-photo folder takes about a minute, not four. Every image becomes the same
# square so that batches stack.
DEFAULT_SIZE = 128
AUTO_DEPTH = 0.5     # --layer auto: the middle block output (relu3_4 on vgg19, blocks.7 on efficientnet_lite0)
PROJECT_BATCH = 8    # winners per deconvnet pass (VGG19 to relu3_4 keeps ~30 MB per 128-px image for backward)


# ------------------------------------------------------------------------------ running top-k

class RunningTopK:
    """Per channel, the k largest (value, image, row, col) seen so far, largest first.

    `update` takes a batch of activations [B, C, H, W] (the channels tracked, in order) and the
    image index of each row; each image contributes its maximum over positions. Ties keep the
    earlier image (stable sort, images arrive in order), so results do not depend on batching.
    """

    def __init__(self, channels: int, k: int):
        self.k = k
        self.values = torch.empty(channels, 0)
        self.images = torch.empty(channels, 0, dtype=torch.long)
        self.rows = torch.empty(channels, 0, dtype=torch.long)
        self.cols = torch.empty(channels, 0, dtype=torch.long)

    def update(self, act: torch.Tensor, indices: Sequence[int], allowed: torch.Tensor | None = None) -> None:
        """Merge a batch: act [B, C, H, W], indices [B]; `allowed` [H, W] bool: positions that count."""
        b, c, h, w = act.shape
        if b == 0:
            return
        act = act.detach().float()
        if allowed is not None:
            act = act.masked_fill(~allowed.to(act.device), float("-inf"))
        peak, where = act.flatten(2).max(dim=2)                            # [B, C] each
        peak, where = peak.t().cpu(), where.t().cpu()                      # [C, B]
        idx = torch.as_tensor(list(indices), dtype=torch.long).expand(c, b)
        values = torch.cat([self.values, peak], 1)
        order = values.sort(dim=1, descending=True, stable=True).indices[:, :self.k]
        self.values = values.gather(1, order)
        self.images = torch.cat([self.images, idx], 1).gather(1, order)
        self.rows = torch.cat([self.rows, where // w], 1).gather(1, order)
        self.cols = torch.cat([self.cols, where % w], 1).gather(1, order)

    def winners(self, slot: int) -> list[tuple[float, int, int, int]]:
        """(value, image, row, col) of tracked channel number `slot`, largest first."""
        return list(zip(self.values[slot].tolist(), self.images[slot].tolist(),
                        self.rows[slot].tolist(), self.cols[slot].tolist()))


# ------------------------------------------------------------------------------------ engine

@dataclass
class TopActProgress:
    stage: str          # "scan" (images through the net) or "project" (deconvnet projections)
    done: int           # images scanned (skipped ones included) / projections made
    total: int
    skipped: int        # unreadable images so far
    elapsed: float      # seconds since the stage started


@dataclass
class Winner:
    channel: int
    rank: int                          # 1 = strongest
    value: float                       # the channel's maximum over the image's positions
    path: Path
    row: int                           # position of that maximum in the layer's grid
    col: int
    box: tuple[int, int, int, int]     # the patch (top, left, bottom, right) in the resized image
    patch: Image.Image | None = None   # image crop (or whole image, --patch image)
    projection: Image.Image | None = None  # deconvnet projection, same crop, zero signal = grey


@dataclass
class Scan:
    """Pass 1's outcome: the running top-k and what was read."""
    top: RunningTopK
    scanned: int              # files tried (skipped ones included)
    skipped: list[Path]
    interrupted: bool
    seconds: float


@dataclass
class TopActResult:
    config: TopActConfig               # as run (device, precision and layer resolved)
    folder: Path
    layer: str                         # as asked for (or chosen by auto)
    canonical: str
    channels: list[int]
    winners: dict[int, list[Winner]]   # channel -> winners, strongest first
    rf: ReceptiveField                 # of the layer, in the resized images' pixels
    found: int                         # image files in the folder
    scanned: int
    skipped: list[Path]
    interrupted: bool                  # Ctrl-C during the scan: the winners are of the images scanned
    seconds: dict[str, float] = field(default_factory=dict)
    # Whether max pooling runs before the layer: the deconvnet's only link to the image is the
    # pooling "switches" (it rectifies the backward signal itself, ignoring the forward ReLUs),
    # so without them every image gets the same projection for the same unit.
    switches: bool = True
    # Ctrl-C during the projections: (winners drawn, winners found); the rest are left out of the
    # sheet and the record. None when every winner was projected.
    projected: tuple[int, int] | None = None


class TopActivations:
    """The network and layer, checked; `scan` then `project` (or `run` for both)."""

    def __init__(self, config: TopActConfig, net=None):
        config, net, device, _ = engine_net(config.validate(), net, channels_last=True)
        precision = default_precision(device) if config.precision == "auto" else config.precision
        config = replace(config, size=config.size or natural_side(net, DEFAULT_SIZE))
        layer = auto_layer(net, AUTO_DEPTH) if config.layer == AUTO else config.layer
        self.net, self.device = net, device
        self.layer = layer
        self.canonical = net.resolve(layer)  # "did you mean" before any work
        shape = flat_shape(net, self.canonical)
        if shape is not None:
            raise ConfigError(f"layer {layer} of {config.net} has no spatial grid (shape {shape}); "
                              "choose a convolutional layer")
        self.channels = parse_channels(config.channels, net.channels_of(layer), f"{layer} of {net.net_name}")
        stride = net.stride_of([layer])
        if config.size < stride:
            raise ConfigError(f"--size {config.size} is too small for {layer} of {config.net}: "
                              f"it needs images of at least {stride} px")
        self.config = replace(config, device=str(device), precision=precision, layer=layer)
        if config.rule == AUTO:
            self.config = replace(self.config, rule="deconvnet" if self.pools_before_layer() else "guided")
        self._field: ReceptiveField | None = None

    @property
    def rf(self) -> ReceptiveField:
        if self._field is None:
            self._field = receptive_field(self.net, self.layer, self.config.size)
        return self._field

    def scan(self, paths: Sequence[Path], callback: Callable[[TopActProgress], None] | None = None,
             batches: Iterable[Batch] | None = None) -> Scan:
        """Pass 1 over `paths` (or the given `batches` of them). Ctrl-C stops the scan early and
        returns what was seen so far (interrupted=True)."""
        c = self.config
        top = RunningTopK(len(self.channels), c.top)
        channels = torch.as_tensor(self.channels, device=self.device)
        if batches is None:
            batches = stream_batches(paths, c.size, c.fit, c.batch_size, c.workers)
        skipped: list[Path] = []
        scanned, interrupted, start = 0, False, time.perf_counter()
        allowed = None
        try:
            for batch in batches:
                if batch.indices:
                    x = batch.pixels.to(self.device).float().div_(255.0)
                    with torch.no_grad(), precision_mode(c.precision, self.device):
                        act = self.net.features(x, [self.layer])[self.layer]
                    if allowed is None and not c.border:
                        allowed = self.rf.allowed(act.shape[2], act.shape[3], c.size)
                    top.update(act.index_select(1, channels), batch.indices, allowed)
                    del x, act
                batch_skipped, batch_count = batch.skipped, len(batch.indices) + len(batch.skipped)
                del batch  # drop our reference before the loader starts the batch after next
                skipped += [paths[i] for i in batch_skipped]
                scanned += batch_count
                if callback is not None:
                    callback(TopActProgress("scan", scanned, len(paths), len(skipped),
                                            time.perf_counter() - start))
        except KeyboardInterrupt:
            interrupted = True
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # a generator: stop its loader threads now
        return Scan(top, scanned, skipped, interrupted, time.perf_counter() - start)

    def project(self, paths: Sequence[Path], scan: Scan,
                callback: Callable[[TopActProgress], None] | None = None,
                into: dict[int, list[Winner]] | None = None) -> dict[int, list[Winner]]:
        """Pass 2: reload each winner, project its activation with the deconvnet, crop both.

        Winners go through the net PROJECT_BATCH at a time (one forward and backward per chunk
        instead of one per winner: less per-call overhead on a CPU, a fuller GPU), in float32.
        `into` (channel -> list) is filled as winners are done, so that it keeps them when Ctrl-C
        stops this pass."""
        c = self.config
        todo = [(self.channels[slot], rank, w) for slot in range(len(self.channels))
                for rank, w in enumerate(scan.top.winners(slot), 1)]
        out: dict[int, list[Winner]] = {} if into is None else into
        for ch in self.channels:
            out.setdefault(ch, [])
        start = time.perf_counter()
        for first in range(0, len(todo), PROJECT_BATCH):
            chunk, loaded = todo[first:first + PROJECT_BATCH], []
            for channel, rank, (value, index, row, col) in chunk:
                try:
                    img = load_square(paths[index], c.size, c.fit)
                except ImageError:  # changed or removed since the scan: leave the slot empty
                    continue
                loaded.append((img, channel, rank, value, index, row, col))
            if loaded:
                x = torch.cat([images.pil_to_tensor(item[0]) for item in loaded]).to(self.device)
                units = [(channel, row, col) for _, channel, _, _, _, row, col in loaded]
                grads = projections(self.net, x, self.layer, units, c.rule)
                for (img, channel, rank, value, index, row, col), grad in zip(loaded, grads):
                    winner = self._winner(channel, rank, value, paths[index], row, col, img, grad[None])
                    out[channel].append(winner)
            if callback is not None:
                done = min(first + PROJECT_BATCH, len(todo))
                callback(TopActProgress("project", done, len(todo), len(scan.skipped),
                                        time.perf_counter() - start))
        return out

    def _winner(self, channel, rank, value, path, row, col, img: Image.Image, grad: torch.Tensor) -> Winner:
        side, rf = self.config.size, self.rf
        exact = rf.exact_box(row, col, side)
        view = _viewable(grad.detach().float().cpu(), exact)  # [3, S, S] in [0, 1]
        if self.config.patch == "rf":
            top, left, bottom, right = box = rf.box(row, col, side)
            patch = img.crop((left, top, right, bottom))
            projection = images.tensor_to_pil(view[:, top:bottom, left:right])
        else:
            box = exact
            patch = img.copy()
            ImageDraw.Draw(patch).rectangle((exact[1], exact[0], exact[3] - 1, exact[2] - 1),
                                            outline=(255, 230, 0))
            projection = images.tensor_to_pil(view)
        return Winner(channel, rank, value, path, row, col, box, patch, projection)

    def run(self, paths: Sequence[Path], folder, callback=None) -> TopActResult:
        field_start = time.perf_counter()
        rf = self.rf  # measured before the scan: a problem with the layer shows at once
        field_seconds = time.perf_counter() - field_start
        scan = self.scan(paths, callback)
        if not scan.interrupted and len(scan.skipped) == scan.scanned:
            raise ImageError(f"none of the {scan.scanned} image(s) in {folder} could be read (the first: "
                             f"{relative_name(scan.skipped[0], Path(folder))}); check the files")
        project_start = time.perf_counter()
        winners: dict[int, list[Winner]] = {ch: [] for ch in self.channels}  # kept if Ctrl-C stops project
        projected = None
        try:
            self.project(paths, scan, callback, into=winners)
        except KeyboardInterrupt:
            # The scan is the long part on a big folder: keep it, and the projections made so far.
            found = sum(len(scan.top.winners(slot)) for slot in range(len(self.channels)))
            projected = (sum(len(ws) for ws in winners.values()), found)
        seconds = {"receptive_field": field_seconds, "scan": scan.seconds,
                   "project": time.perf_counter() - project_start}
        return TopActResult(self.config, Path(folder), self.layer, self.canonical, self.channels, winners, rf,
                            len(paths), scan.scanned, scan.skipped, scan.interrupted, seconds,
                            switches=self.pools_before_layer(), projected=projected)

    def pools_before_layer(self) -> bool:
        """Whether a max pooling runs before (or at) the layer, found by a tiny forward with hooks
        (removed at once): module order in the net says nothing about the forward order."""
        ran = []
        handles = [m.register_forward_hook(lambda *_: ran.append(True))
                   for m in self.net.modules() if isinstance(m, torch.nn.MaxPool2d)]
        try:
            side = self.net.stride_of([self.layer])
            with torch.no_grad():
                self.net.features(torch.zeros(1, 3, side, side, device=self.device), [self.layer])
        finally:
            for h in handles:
                h.remove()
        return bool(ran)


def top_activations(folder, config: TopActConfig | None = None, net=None,
                    callback: Callable[[TopActProgress], None] | None = None) -> TopActResult:
    """Top-k images of each channel over `folder`, with deconvnet projections (see the module doc)."""
    config = config_of(TopActConfig() if config is None else config, TopActConfig).validate()
    check_loaded_net(net)
    callback_or_none(callback, "TopActProgress")
    if not isinstance(folder, (str, os.PathLike)):
        raise ConfigError(f"folder must be a folder path, not {type(folder).__name__}")
    paths = find_images(folder)
    return TopActivations(config, net).run(paths, folder, callback)


def projections(net, x: torch.Tensor, layer: str, units: Sequence[tuple[int, int, int]],
                rule: str = "deconvnet") -> torch.Tensor:
    """Projections [N, 3, H, W] of one activation per image: image i of x [N, 3, H, W] projects
    units[i] = (channel, row, col) of `layer` by the backward `rule`. Each image's gradient depends
    on its own score only (frozen nets in eval mode treat the images of a batch independently), so
    this is `attribution.backproject(net, x[i:i+1], Target(layer, channel, (row, col)), rule)` for
    every i at once."""
    channel, row, col = (torch.as_tensor(v, device=x.device) for v in zip(*units))
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), backward_rule(rule):
        act = net.features(x, [layer])[layer]
        score = act[torch.arange(len(units), device=x.device), channel, row, col].float().sum()
        (grad,) = torch.autograd.grad(score, x)
    return grad


def _viewable(grad: torch.Tensor, box: tuple[int, int, int, int], spread: float = 3.0) -> torch.Tensor:
    """Signed projection [1, 3, H, W] -> [3, H, W] in [0, 1], by the convention of
    `attribution.gradient_image` (mid-grey = mean, +-`spread` standard deviations to the ends) but
    with the statistics of the unit's field `box` only: outside it the projection is exactly zero,
    and those zeros would otherwise set the contrast (washed out for small fields)."""
    top, left, bottom, right = box
    region = grad[:, :, top:bottom, left:right]
    mean = region.mean()
    std = (region - mean).std().clamp(min=1e-12) if region.numel() > 1 else grad.new_tensor(1.0)
    return (0.5 + (grad[0] - mean) / (2 * spread * std)).clamp(0, 1)

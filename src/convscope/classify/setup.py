"""What every training pass starts from, built one way for `train` and `find_lr`: the model with its
frozen and trainable parts, the optimizer, the loss, the arithmetic, and the training batches (a
device-resident loader, or the cached bottleneck features of a frozen backbone)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from .config import TrainConfig
from .data import DataSplits
from .features import bottleneck_features
from .loader import DeviceLoader
from .models import TransferModel, build_model
from .optim import feature_precision, make_optimizer, precision_context


@dataclass
class Setup:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    autocast: contextlib.AbstractContextManager
    precision: str                       # resolved: fp32, bf16 or fp16
    channels_last: bool                  # NHWC images and weights
    cached: bool                         # a frozen backbone: the head trains on train_x
    train_x: torch.Tensor | None         # bottleneck features of the training / validation images
    val_x: torch.Tensor | None
    train_y: torch.Tensor | None
    loader: DeviceLoader | None          # otherwise the images, augmented on the device
    steps_per_epoch: int
    scaler: torch.amp.GradScaler | None  # fp16: small gradients scaled up so they do not flush to zero

    def batches(self, config: TrainConfig, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Epoch `epoch`'s training batches (x, y), on the device; the same every time it is asked for."""
        if self.cached:
            gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            order = torch.randperm(len(self.train_y), generator=gen)
            device = next(self.model.parameters()).device
            return ((self.train_x[order[s:s + config.batch_size]].to(device),
                     self.train_y[order[s:s + config.batch_size]].to(device))
                    for s in range(0, len(order), config.batch_size))
        self.loader.set_epoch(epoch)
        return iter(self.loader)

    def logits(self, x: torch.Tensor, forward: nn.Module | None = None) -> torch.Tensor:
        """The model's logits for a batch of `batches` (the head alone on cached features)."""
        try:
            return self.model.head(x) if self.cached else (forward or self.model)(x)
        except ValueError as exc:
            # A BatchNorm layer in training that sees one value per channel (vgg19-bn's dense head,
            # a torchvision model's last stage at a small input) with one image per batch.
            if "Expected more than 1 value per channel" not in str(exc):
                raise
            raise ConfigError(f"a batch of {x.shape[0]} image(s) cannot train this model: its BatchNorm layers "
                              "need more than one value per channel; use --batch-size 2 or more") from None

    def step(self, loss: torch.Tensor) -> None:
        """One optimizer step down `loss`."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()


def class_weights(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """'balanced' loss weights [C]: n / (C * n_c) for a class of n_c of the n training images (the
    whole set, the same on every rank); 1 for every class of a balanced set."""
    counts = torch.bincount(labels, minlength=classes).float()
    return torch.where(counts > 0, labels.numel() / (classes * counts.clamp(min=1)), torch.zeros(()))


def set_trainable(model: nn.Module, config: TrainConfig) -> list[dict]:
    """Parameter groups to optimize; freezes what must not train."""
    if not isinstance(model, TransferModel):
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr_scale": 1.0}]
    model.backbone.requires_grad_(False)
    groups = [{"params": list(model.head.parameters()), "lr_scale": 1.0}]
    if config.finetune:
        blocks = model.backbone_blocks()
        if config.finetune > len(blocks):
            raise ConfigError(f"--finetune {config.finetune}: {model.backbone_name} has {len(blocks)} blocks")
        opened = [p for block in blocks[-config.finetune:] for p in block.parameters()]
        for p in opened:
            p.requires_grad_(True)
        groups.append({"params": opened, "lr_scale": config.backbone_lr})
    return groups


def uses_channels_last(model: nn.Module, config: TrainConfig, device: torch.device) -> bool:
    """Whether `model` of `config` runs in NHWC on `device`, in training and in evaluation.

    NHWC where asked. On the CPU (bench/classify_cpu.py; README, CIFAR-10 on the CPU) it made the
    float32 training steps of resnet-fast 1.36x faster, simple's 1.09x and fine-tuning's about 1.7x,
    but a frozen backbone's forward-only feature pass 0.89x in float32; that pass takes NHWC images
    there only in bf16."""
    cached = isinstance(model, TransferModel) and not config.finetune
    return bool(config.channels_last) and not (cached and device.type == "cpu")


def prepare(splits: DataSplits, config: TrainConfig, device: torch.device, *, shard: torch.Tensor | None = None,
            cache_dir: Path | None = None, report: Callable[[int, int], None] | None = None,
            init: bool = True, validation: bool = True) -> Setup:
    """Build what a training pass needs for resolved `config` on `device`. `shard`: the positions of
    this process's training images under torchrun (default: all); `report(done, total)`: progress
    of a frozen backbone's one-off feature pass; `init`: run the model's data-dependent
    initialization (a resumed run loads its weights instead); `validation`: a frozen backbone's
    validation features too."""
    classes = splits.train.classes
    autocast, precision = precision_context(config.precision, device, config.model)
    torch.manual_seed(config.seed)
    model = build_model(config.model, len(classes), config.input_size, hidden=config.hidden,
                        dropout=config.dropout).to(device)
    if not isinstance(model, TransferModel):
        _check_image_size(splits, config)
    cached = isinstance(model, TransferModel) and not config.finetune
    channels_last = uses_channels_last(model, config, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config, set_trainable(model, config))
    train_x = val_x = train_y = loader = None
    if cached:
        arithmetic = feature_precision(config.precision, device)  # (bf16 on the CPU under auto too)
        nhwc = config.channels_last and (device.type != "cpu" or arithmetic == "bf16")
        train_x = bottleneck_features(model, splits.train, device, 256, cache_dir, report, arithmetic, nhwc)
        val_x = bottleneck_features(model, splits.val, device, 256, cache_dir, report, arithmetic,
                                    nhwc) if validation else None
        train_y = splits.train.labels
        steps_per_epoch = math.ceil(len(train_y) / config.batch_size)
    else:
        shard = splits.train if shard is None else splits.train.subset(shard)
        loader = DeviceLoader(shard, config.batch_size, shuffle=True, drop_last=len(shard) > config.batch_size,
                              flip=config.flip, alternate_flip=config.alternate_flip, translate=config.translate,
                              cutout=config.cutout, device=device,
                              channels_last=channels_last, seed=config.seed)
        steps_per_epoch = len(loader)
        if init:
            # Data-dependent initialization (resnet-fast's patch whitening), before an EMA copy is
            # taken, so the average never mixes random and computed filters. The same on every rank.
            from .models import data_init

            data_init(model, splits.train.images[:config.batch_size].to(device).float().div_(255))
    weight = class_weights(splits.train.labels, len(classes)).to(device) if config.class_weights == "balanced" \
        else None
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    return Setup(model, optimizer, criterion, autocast, precision, channels_last, cached, train_x, val_x, train_y,
                 loader, steps_per_epoch, scaler)


def _check_image_size(splits: DataSplits, config: TrainConfig) -> None:
    """Models trained from scratch see the images as they are: they must have the input size (a
    transfer model upsamples them on the device instead)."""
    side = config.input_size
    for data in (splits.train, splits.val):
        h, w = data.images.shape[-2:]
        if (h, w) != (side, side):
            raise ConfigError(f"the images are {w}x{h} px but model {config.model} takes input_size {side}; "
                              f"load them with load_data(..., size={side}) or set TrainConfig(input_size={h})")

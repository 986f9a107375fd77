"""Training options: one dataclass (CLI options and help come from it) and per-model recipes.

Options left at None take the model's recipe (`RECIPES`): the reference settings of each kind of
model (Adadelta for `simple`, SGD-Nesterov with weight decay, flips and shifts for `vgg19-bn`, Adam
on cached features for transfer heads, a short large-batch speed run for `resnet-fast`). The resolved
config is what a run directory records.

Also the options of `classify export` (`ExportConfig`). Free of torch, so the CLI lists its options
without loading it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from ..errors import ConfigError
from ..options import check_choices, documented
from ..options import option as _opt

OPTIMIZERS = ("sgd", "adam", "adamw", "adadelta")
SCHEDULES = ("none", "step", "cosine", "onecycle")
TRAIN_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TTA_MODES = ("none", "flip", "shift")  # test-time augmentation of evaluate (infer.tta_logits)
KEEP_CHOICES = ("last", "best")  # which epoch's weights model.safetensors holds
CLASS_WEIGHTS = ("none", "balanced")  # how each class's images count in the training loss

# Where decoded images, bottleneck features and CIFAR-10 go unless --cache-dir / --data-root say:
# the XDG base directory rule (an absolute $XDG_CACHE_HOME, else ~/.cache), the one place it is decided.
CACHE_DIR_HELP = "default: $XDG_CACHE_HOME/convscope where XDG_CACHE_HOME is set, else ~/.cache/convscope"


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/convscope when XDG_CACHE_HOME is set to an absolute path (the XDG spec
    ignores a relative one), else ~/.cache/convscope."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return Path(base if os.path.isabs(base) else Path("~", ".cache").expanduser(), "convscope")


RECIPES: dict[str, dict] = {
    # The reference: Keras' CIFAR CNN example as in the issue, Adadelta at its Keras defaults.
    "simple": dict(epochs=10, batch_size=128, optimizer="adadelta", lr=1.0, weight_decay=0.0, schedule="none",
                   flip=False, translate=0, input_size=32),
    # lr 0.01: at 0.05 the first steps from the pretrained convolutions blow up (loss 16 by step 5 on
    # CIFAR-10, then the net relearns from scratch: 88% after 58 epochs, against 90% after 48 at 0.01).
    "vgg19-bn": dict(epochs=60, batch_size=128, optimizer="sgd", lr=0.01, weight_decay=5e-4, schedule="cosine",
                     flip=True, translate=4, input_size=32),
    "transfer": dict(epochs=30, batch_size=256, optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="cosine",
                     flip=False, translate=0, input_size=None),
    # --finetune N: the same, but each epoch runs the backbone at full input size (no cached features),
    # and a few epochs suffice (CIFAR-10, EfficientNet-Lite0 at 224 px, all 18 blocks: 91.8% in 4).
    "transfer-finetune": dict(epochs=4, batch_size=256, optimizer="adam", lr=1e-3, weight_decay=0.0,
                              schedule="cosine", flip=False, translate=0, input_size=None),
    "torchvision": dict(epochs=60, batch_size=128, optimizer="sgd", lr=0.05, weight_decay=5e-4, schedule="cosine",
                        flip=True, translate=4, input_size=32),
    # A speed run (airbench94's hyperparameters, translated to this loop): 10 epochs of 1024 images,
    # label smoothing 0.2, flips and 2 px shifts. airbench's per-1024-examples lr 11.5 at momentum 0.85
    # is, for a mean loss with Nesterov momentum 0.9 (same step size lr * (1 + 1/(1 - momentum))),
    # lr ~1.0; its decoupled weight decay 0.0153 per 1024 examples is 1.33e-3 relative to that lr (the
    # fraction of each weight removed per step, lr * wd, stays the same). A triangle schedule (one-cycle)
    # anneals to 0 instead of airbench's Lookahead averaging; no EMA. 12 epochs with alternating flips:
    # on an H100 (3 seeds, bench/cifar10.py) 89.69% in 3.6 s, against 89.14% in 3.3 s for 10 epochs
    # of random flips (alternating flips alone gained nothing at 10 epochs, 0.4 points at 12).
    "resnet-fast": dict(epochs=12, batch_size=1024, optimizer="sgd", lr=1.0, weight_decay=1.33e-3,
                        schedule="onecycle", label_smoothing=0.2, flip=True, alternate_flip=True, translate=2,
                        input_size=32),
}
# What a recipe that does not name them uses.
RECIPE_DEFAULTS: dict = dict(label_smoothing=0.0, alternate_flip=False)
# The largest learning rate, rate factor and weight decay taken: far past any use (a run diverges
# long before), and their products stay inside float32, where the optimizers' steps are computed
# (past 3.4e38 a step was a RuntimeError traceback instead of the diverged run's one-line error).
MAX_RATE = 1e12
TRANSFER_INPUT = {"vgg19": 32, "efficientnet_lite0": 224}


def recipe_of(model: str, finetune: int = 0) -> dict:
    if model in RECIPES:
        return RECIPES[model]
    if model.startswith("transfer:"):
        return RECIPES["transfer-finetune" if finetune else "transfer"]
    return RECIPES["torchvision"]


@documented
@dataclass
class TrainConfig:
    """Options of `convscope.classify.train.train` and `find_lr` (`convscope classify train`); None
    means the model's own default (resolved() fills them in)."""

    data: str = _opt("cifar10 (downloads on first use) or a folder of class sub-folders (optionally "
                     "train/ plus test/ or val/ inside)", "cifar10")
    model: str = _opt("simple, vgg19-bn, resnet-fast, transfer:vgg19, transfer:efficientnet_lite0, or a "
                      "torchvision classification model name", "simple")
    data_root: str | None = _opt("where CIFAR-10 is or is downloaded to (default: cifar10 inside the "
                                 "default --cache-dir)", None)
    epochs: int | None = _opt("training epochs (default: the model's recipe)", None)
    batch_size: int | None = _opt("images per step (default: the model's recipe)", None)
    optimizer: str | None = _opt("sgd (Nesterov), adam, adamw, adadelta (default: the model's recipe)", None)
    lr: float | None = _opt("peak learning rate (default: the model's recipe)", None)
    momentum: float = _opt("momentum of sgd", 0.9)
    weight_decay: float | None = _opt("L2 weight decay (decoupled for adamw) (default: the model's recipe)", None)
    schedule: str | None = _opt("learning-rate schedule: none, step (x0.1 at 50% and 75%), cosine, onecycle "
                                "(default: the model's recipe)", None)
    warmup: float = _opt("epochs of linear learning-rate warm-up (fewer than the run's epochs)", 0.0)
    class_weights: str = _opt("weigh the training loss per class: none, or balanced (each class in inverse "
                              "proportion to its share of the training images, so a class with few images "
                              "counts as much as one with many; scikit-learn's 'balanced')", "none",
                              choices=CLASS_WEIGHTS)
    label_smoothing: float | None = _opt("label smoothing of the cross-entropy (default: the model's recipe, "
                                         "0 unless it says otherwise)", None)
    flip: bool | None = _opt("random horizontal flips (default: the model's recipe)", None)
    alternate_flip: bool | None = _opt("with flips: mirror each image in every other epoch (a random half first) "
                                       "instead of at random each epoch (default: the model's recipe)", None)
    translate: int | None = _opt("random shifts of up to N pixels (default: the model's recipe)", None)
    cutout: int = _opt("fill a random square of N pixels per image with the mean colour (0 = off)", 0)
    ema: float = _opt("exponential moving average of the weights, decay per step (0 = off; e.g. 0.999)", 0.0)
    early_stopping: int = _opt("stop after N epochs without a better validation accuracy (or the same with a "
                               "lower validation loss) (0 = off)", 0)
    keep: str = _opt("the weights model.safetensors holds: last (the final epoch's) or best (the epoch with the "
                     "highest validation accuracy, of equals the lowest validation loss; e.g. with "
                     "--early-stopping. Where the validation data is the test set, as with cifar10, choosing by "
                     "it flatters the test accuracy)", "last", choices=KEEP_CHOICES)
    val_split: float = _opt("fraction of each class held out for validation when the folder has no "
                            "test/ or val/", 0.1)
    input_size: int | None = _opt("side the network sees, in pixels: images are upsampled on the device "
                                  "(default: 32 from scratch; 32 for transfer:vgg19, 224 for "
                                  "transfer:efficientnet_lite0)", None)
    finetune: int = _opt("transfer: also train the last N blocks of the backbone (0 = frozen, bottleneck "
                         "features cached)", 0)
    backbone_lr: float = _opt("learning-rate factor of the unfrozen backbone blocks", 0.1)
    hidden: tuple[int, ...] = _opt("transfer head: hidden layer widths", (512, 256))
    dropout: float = _opt("dropout of the dense heads of transfer: and vgg19-bn models", 0.5)
    precision: str = _opt("arithmetic: auto (bf16 autocast on CUDA, fp32 on the CPU; on CPUs with native "
                          "bf16, simple's training and a frozen backbone's feature pass in bf16), fp32, bf16, "
                          "fp16 (CUDA)",
                          "auto", choices=TRAIN_PRECISIONS)
    channels_last: bool = _opt("NHWC memory layout (faster convolutions on GPU and on the CPU through oneDNN)",
                               True)
    snapshots: bool = _opt("each epoch, save the first-layer filters and a layer's activations for a fixed "
                           "image, and render a feature-evolution figure", False)
    snapshot_layer: str = _opt("layer whose activations --snapshots records (auto = the first block that "
                                "learns)", "auto")
    seed: int = _opt("random seed (initialization, data order, augmentation, dropout)", 0)
    device: str = _opt("device: auto, cpu, cuda, cuda:N, mps", "auto")

    def to_dict(self) -> dict:
        return asdict(self)

    def resolved(self) -> TrainConfig:
        """Every None replaced by the model's recipe."""
        self._check_model()
        recipe = {**RECIPE_DEFAULTS, **recipe_of(self.model, self.finetune)}
        values = {k: v for k, v in recipe.items() if getattr(self, k) is None}
        if self.alternate_flip is None and not (self.flip if self.flip is not None else recipe["flip"]):
            values["alternate_flip"] = False  # the recipe's alternating flips, but no flips (--no-flip)
        if self.input_size is None and values.get("input_size", 1) is None:
            values["input_size"] = TRANSFER_INPUT.get(self.model.split(":", 1)[-1], 224)
        return replace(self, **values).validate()

    def _check_model(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(f"--model must be a model name such as simple or transfer:efficientnet_lite0, "
                              f"not {self.model!r}")

    def validate(self) -> TrainConfig:
        self._check_model()
        check_choices(self)
        for name in ("momentum", "warmup", "cutout", "ema", "early_stopping", "val_split", "finetune",
                     "backbone_lr", "dropout"):
            if getattr(self, name) is None:  # only the recipe's options may be left at None
                raise ConfigError(f"--{name.replace('_', '-')} needs a value (its default is "
                                  f"{TrainConfig.__dataclass_fields__[name].default!r}), not None")
        for name in ("flip", "alternate_flip", "channels_last", "snapshots"):
            value = getattr(self, name)
            if not isinstance(value, bool) and not (value is None and name in ("flip", "alternate_flip")):
                raise ConfigError(f"--{name.replace('_', '-')} must be True or False, not {value!r}")
        if not isinstance(self.snapshot_layer, str):
            raise ConfigError(f"--snapshot-layer must be a layer name or auto, not {self.snapshot_layer!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("optimizer", "schedule") and value is not None:
                allowed = OPTIMIZERS if f.name == "optimizer" else SCHEDULES
                if value not in allowed:
                    raise ConfigError(f"--{f.name} must be one of {', '.join(allowed)}, not {value!r}")

        def whole(name, lo, hi=None):
            v = getattr(self, name)
            if v is None:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
                bound = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
                raise ConfigError(f"--{name.replace('_', '-')} must be a whole number {bound}, not {v!r}")

        def number(name, lo, hi=None, open_low=False):
            v = getattr(self, name)
            if v is None:
                return
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and \
                (v > lo if open_low else v >= lo) and (hi is None or v <= hi)
            if not ok:
                raise ConfigError(f"--{name.replace('_', '-')} must be a number "
                                  f"{'above' if open_low else 'at least'} {lo}"
                                  f"{f' and at most {hi:g}' if hi is not None else ''}, not {v!r}")

        whole("epochs", 1, 100_000)
        whole("batch_size", 1, 1 << 16)
        whole("translate", 0, 64)
        whole("cutout", 0, 1024)
        whole("early_stopping", 0)
        whole("finetune", 0, 100)
        whole("input_size", 8, 1024)
        whole("seed", 0)
        number("lr", 0, MAX_RATE, open_low=True)
        number("momentum", 0, 0.999)
        number("weight_decay", 0, MAX_RATE)
        number("warmup", 0)
        number("label_smoothing", 0, 0.5)
        number("ema", 0, 0.99999)
        number("val_split", 0, 0.5, open_low=True)
        number("backbone_lr", 0, MAX_RATE)
        number("dropout", 0, 0.95)
        if not isinstance(self.hidden, (tuple, list)) or not self.hidden or any(
                isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ConfigError(f"--hidden must be a list of positive whole numbers such as (512, 256), "
                              f"not {self.hidden!r}")
        # Against the images' side (the loader checks again against the decoded size, which a
        # transfer model may keep smaller): said here, not after the data was decoded.
        if self.input_size is not None and self.translate is not None and self.translate >= self.input_size:
            raise ConfigError(f"--translate ({self.translate}) must be below --input-size ({self.input_size})")
        if self.input_size is not None and self.cutout > self.input_size:
            raise ConfigError(f"--cutout ({self.cutout}) must be at most --input-size ({self.input_size})")
        if self.finetune and not self.model.startswith("transfer:"):
            raise ConfigError("--finetune applies to transfer:BACKBONE models only")
        # Options a model has no use for were ignored without a word (--dropout 0.1 on simple).
        default = {f.name: f.default for f in fields(TrainConfig)}
        if tuple(self.hidden) != default["hidden"] and not self.model.startswith("transfer:"):
            raise ConfigError(f"--hidden sets the dense head of transfer:BACKBONE models; model {self.model} "
                              "has its own")
        if self.dropout != default["dropout"] and not (self.model.startswith("transfer:") or self.model == "vgg19-bn"):
            raise ConfigError(f"--dropout sets the dense head of transfer:BACKBONE and vgg19-bn models; model "
                              f"{self.model} has its own")
        if self.backbone_lr != default["backbone_lr"] and not self.finetune:
            raise ConfigError("--backbone-lr sets the rate of the backbone blocks --finetune N trains; without "
                              "--finetune the backbone is frozen")
        if self.momentum != default["momentum"] and self.optimizer not in (None, "sgd"):
            raise ConfigError(f"--momentum is sgd's; the optimizer here is {self.optimizer} (--optimizer, or the "
                              "model's recipe): add --optimizer sgd or drop --momentum")
        return self


def check_command_options(config: TrainConfig) -> None:
    """What a training command is refused that a saved config.json may hold (runs of earlier
    versions, which took it without a word, stay loadable): --snapshot-layer without --snapshots,
    --alternate-flip without flips (--no-flip, or a recipe without them), --warmup as long as the run."""
    if config.snapshot_layer != TrainConfig.snapshot_layer and not config.snapshots:
        raise ConfigError("--snapshot-layer names the layer --snapshots records; add --snapshots")
    if config.alternate_flip is True and config.flip is None:
        config._check_model()
    if config.alternate_flip is True and not (config.flip if config.flip is not None else
                                              recipe_of(config.model, config.finetune)["flip"]):
        raise ConfigError(f"--alternate-flip changes how flips are drawn, but model {config.model} trains "
                          "without flips here (--no-flip, or its recipe): add --flip or drop --alternate-flip")
    if config.warmup:
        config._check_model()
        epochs = config.epochs if config.epochs is not None else recipe_of(config.model, config.finetune)["epochs"]
        if config.warmup >= epochs:  # the rate was still rising when the run ended, without a word
            raise ConfigError(f"--warmup {config.warmup:g} is not shorter than the run's {epochs} epochs (--epochs, or "
                              "the model's recipe): the learning rate would never reach --lr; give fewer warm-up "
                              "epochs")
    check_data_root(config.data, config.data_root)


def check_data_root(data, data_root) -> None:
    """--data-root is where CIFAR-10 is: with a folder as --data it was ignored without a word."""
    if data_root is not None and data != "cifar10":
        raise ConfigError(f"--data-root says where CIFAR-10 is; --data here is the folder {data}: drop --data-root")


# What resuming a run may change: how long and where it trains, not what (data, recipe, model shape).
RESUME_MAY_CHANGE = ("epochs", "early_stopping", "device", "precision", "channels_last", "data_root", "snapshots")


def for_splits(config: TrainConfig, splits) -> TrainConfig:
    """`config` with its data options describing `splits` (a DataSplits), as the run will record
    them: an API caller passes the data loaded, and may leave TrainConfig.data at its default; a run
    recorded as "cifar10" was then evaluated on CIFAR-10. A hold-out is drawn again from the recorded
    fraction and seed at evaluation, so a seed other than the one it was drawn with is refused."""
    from .folders import same_folder

    source, data = splits.source, config.data
    if data == "cifar10" and source != "cifar10":
        config = replace(config, data=source)
    elif data != source and (source == "cifar10" or data == "cifar10" or not same_folder(data, source)):
        raise ConfigError(f"TrainConfig(data={data!r}) names other data than the splits, loaded from {source}; "
                          f"leave data at its default or give the same")
    if splits.val_split is not None:
        if splits.seed != config.seed:
            raise ConfigError(f"the hold-out was drawn with load_data(seed={splits.seed}) but TrainConfig has "
                              f"seed={config.seed}; evaluation draws it again from the run's seed, so give both "
                              f"the same seed")
        config = replace(config, val_split=splits.val_split)
    return config


def check_resume_options(saved: dict, config: TrainConfig, run: str) -> None:
    """ConfigError (one line) when a run is resumed with options other than those it was trained with
    (`saved`, its config.json's): the checkpoint would go on with another recipe while config.json
    still described the old one. Both sides are compared resolved (a recipe default written out or
    left as None is the same option); `data` is the caller's to compare (a folder moves). The
    snapshot layer may change while the run had no snapshots (so --snapshots can start with one)."""
    known = {f.name for f in fields(TrainConfig)}
    try:
        before = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v
                                for k, v in saved.items() if k in known}).resolved().to_dict()
    except (ConfigError, TypeError):
        return  # a config.json this version cannot read back; loading the checkpoint will say more
    now = json.loads(json.dumps(config.resolved().to_dict()))  # tuples as lists on both sides
    before = json.loads(json.dumps(before))
    for side in (before, now):  # (without flips, how they would alternate is moot: earlier runs kept a recipe's)
        side["alternate_flip"] = bool(side["alternate_flip"] and side["flip"])
    # (The layer is pinned while the run records one: a resume without --snapshots names none.)
    free = set(RESUME_MAY_CHANGE) | ({"snapshot_layer"} if not (before.get("snapshots") and now["snapshots"])
                                     else set())
    for key, value in now.items():
        # (An option the saved config lacks, from a version before it existed, counts as its default:
        # `before` was resolved with it, so --class-weights balanced on such a run is refused.)
        if key in free or key == "data" or before[key] == value:
            continue
        raise ConfigError(f"{run} was trained with {_as_option(key, before[key])}, not {_as_option(key, value)}; "
                          f"resume with the run's options (only "
                          f"{', '.join('--' + k.replace('_', '-') for k in RESUME_MAY_CHANGE)} may change)")


def _as_option(key: str, value) -> str:
    """How the command line says key=value: --lr 0.5, --no-flip, --hidden 512 256."""
    flag = key.replace("_", "-")
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    return f"--{flag} {' '.join(map(str, value)) if isinstance(value, (list, tuple)) else value}"


def check_sweep(start, end, steps) -> None:
    """ConfigError (one line) unless `start` < `end` are learning rates and `steps` a sweep's length
    (classify.lrfind; here, free of torch, so the CLI checks them before loading anything)."""
    for name, value in (("start", start), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_RATE:
            raise ConfigError(f"--{name} must be a learning rate above 0 and at most {MAX_RATE:g}, not {value!r}")
    if not start < end:
        raise ConfigError(f"--start ({start:g}) must be below --end ({end:g})")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 10 <= steps <= 100_000:
        raise ConfigError(f"--steps must be a whole number from 10 to 100000, not {steps!r}")


# ---- classify export (classify.export) -------------------------------------------------------------
EXPORTERS = ("auto", "torchscript", "dynamo")


@documented
@dataclass
class ExportConfig:
    opset: int = _opt("ONNX opset version (18 runs on onnxruntime >= 1.14; the TorchScript exporter "
                      "goes up to 20)", 18)
    dynamic_batch: bool = _opt("accept any batch size (default: on; --no-dynamic-batch fixes it at 1)", True)
    probabilities: bool = _opt("add a softmax 'probabilities' output next to 'logits' (default: on)", True)
    verify: bool = _opt("compare onnxruntime's outputs with PyTorch's before writing, when onnxruntime "
                        "is installed (default: on)", True)
    exporter: str = _opt("auto (TorchScript exporter, else the torch.export one), torchscript, dynamo",
                         "auto", choices=EXPORTERS)

    def validate(self) -> ExportConfig:
        check_choices(self)
        # (the API's opset='18' was a TypeError, 18.0 the exporter's pybind error; dynamic_batch='no' was True)
        if isinstance(self.opset, bool) or not isinstance(self.opset, int):
            raise ConfigError(f"--opset must be a whole number, not {self.opset!r}")
        for name in ("dynamic_batch", "probabilities", "verify"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, not {getattr(self, name)!r}")
        if not 9 <= self.opset <= 30:
            raise ConfigError(f"--opset must be between 9 and 30 (18 is a safe choice), not {self.opset}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

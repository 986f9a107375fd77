"""Using a trained run: load it, evaluate it on a data set, predict images, turn it into a named-layer net.

A run's model file holds the weights; config.json says which architecture, classes and input size
they belong to. ImageNet predictions without training use EfficientNet-Lite0's bundled head.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from .. import images
from ..argcheck import as_image
from ..devices import as_device
from ..errors import ConfigError, ImageError
from ..imagefiles import image_paths  # noqa: F401 (moved there, torch-free, for the CLI)
from .config import TrainConfig
from .data import square_crop
from .models import build_model
from .run import RunDir, RunError
from .infer import predict_logits
from .setup import uses_channels_last
from .checkpoints import load_state


@dataclass
class LoadedRun:
    model: nn.Module
    config: TrainConfig
    classes: list[str]
    input_size: int
    path: Path
    epoch: int | None = None     # the training epoch the weights are from (None: not recorded)


def load_run(path: str | Path, device: torch.device | str = "cpu") -> LoadedRun:
    """The trained model of run folder `path`, frozen, in eval mode, on `device`."""
    run = RunDir(path)
    info = run.info()
    device = as_device(device)
    try:
        config = TrainConfig(**info["config"])
        classes = list(info["classes"])
    except (KeyError, TypeError) as e:
        raise RunError(f"{run.file('config.json')} is incomplete or from another version ({e})") from None
    try:  # training checked these; an edited or damaged file (input_size "x") failed deep in the model
        config.validate()
        if config.input_size is None:  # (training writes the size it resolved; None failed in the model)
            raise ConfigError("--input-size needs a value, not None")
    except ConfigError as e:
        raise RunError(f"{run.file('config.json')} is damaged: {e}") from None
    if len(set(classes)) != len(classes):  # (two outputs of one name: predictions would mislabel)
        raise RunError(f"{run.file('config.json')} is damaged: its classes repeat a name")
    model = build_model(config.model, len(classes), config.input_size, hidden=tuple(config.hidden),
                        dropout=config.dropout)
    state, meta = run.load_model_state()
    load_state(model, state, str(run.file("model.safetensors")))
    model.requires_grad_(False)
    epoch = meta.get("epoch")
    return LoadedRun(model.eval().to(device), config, classes, int(config.input_size), run.path,
                     epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None)


def as_net(loaded: LoadedRun):
    """The run's model as a `HookedNet` (layers by module path, `logits`, class names): what the
    vis engines take, so every method works on a trained CIFAR net as on VGG19."""
    from ..nets import HookedNet

    _check_loaded(loaded)
    aliases, blocks = _backbone_names(loaded.model)
    net = HookedNet(loaded.model, nn.Identity(), str(loaded.path), loaded.input_size, loaded.classes,
                    aliases=aliases, blocks=blocks)
    net.requires_grad_(False)
    return net.eval()


def _backbone_names(model: nn.Module) -> tuple[dict[str, str], list[str] | None]:
    """A transfer run's layer aliases and block outputs, from its pretrained backbone: `conv5_4` or
    `blocks.10` name the layer as on the bare backbone. Without them the run's only top-level
    children are the whole backbone (1x1 or flat at its output) and the head, so no block exists
    for `--layer auto` and `all-conv`. ({}, None) for the from-scratch models."""
    from ..nets import Backbone, HookedNet

    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, Backbone):
        # The VGG chain applies its ReLUs functionally (no module call, so no hook): a block's
        # output is the conv before its last ReLU, and only conv and pool names can be aliased.
        path = {name: f"backbone.layers.{i}" for i, (name, m) in enumerate(zip(backbone.names, backbone.layers))
                if not isinstance(m, nn.ReLU)}
        aliases = dict(path)
        aliases.update({a: path[t] for a, t in backbone.aliases.items() if t in path})
        blocks = [path.get(b) or f"backbone.layers.{backbone.index[b] - 1}" for b in backbone.block_outputs()]
    elif isinstance(backbone, HookedNet):
        aliases = {a: f"backbone.model.{t}" for a, t in backbone.aliases.items() if t}
        aliases.update({n: f"backbone.model.{n}" for n in backbone.names if n and n not in aliases})
        blocks = [f"backbone.model.{b}" for b in backbone.block_outputs()]
    else:
        return {}, None
    # The run's own module paths win: the backbone's `head` is not the run's head.
    own = {n for n, _ in model.named_modules()}
    return {a: t for a, t in aliases.items() if a not in own}, blocks


@dataclass
class Evaluation:
    accuracy: float
    top_k: dict[int, float]                  # k -> top-k accuracy
    per_class: dict[str, float]              # class -> accuracy (recall)
    confusion: torch.Tensor                  # [C, C] counts, rows = true class
    count: int
    tta: str                                 # none, flip or shift (see infer.tta_logits)
    mistakes: list[Mistake] = field(default_factory=list)  # the most confident, worst first

    @property
    def balanced_accuracy(self) -> float:
        """The mean of the per-class accuracies: each class counts the same, however many images it
        has (the accuracy of a run that ignores a rare class hides it; this does not)."""
        return sum(self.per_class.values()) / max(1, len(self.per_class))

    def most_confused(self, classes: list[str], n: int = 5) -> list[tuple[str, str, int]]:
        """The n (actual, predicted, count) pairs of different classes taken for each other most often."""
        off = self.confusion.clone()
        off.fill_diagonal_(0)
        counts, flat = off.flatten().sort(descending=True, stable=True)
        c = off.shape[0]
        return [(classes[i // c], classes[i % c], int(k)) for k, i in zip(counts[:n].tolist(), flat[:n].tolist())
                if k > 0]


@dataclass
class Mistake:
    """A misclassified image: where it is among the images evaluated, and how wrong."""
    index: int
    actual: int
    predicted: int
    p_predicted: float
    p_actual: float

    @property
    def loss(self) -> float:
        """Its cross-entropy, -log p(actual): the more confident the mistake, the larger."""
        return -math.log(max(self.p_actual, 1e-45))


def evaluate(loaded: LoadedRun, images_u8: torch.Tensor, labels: torch.Tensor, device, tta: str = "none",
             ks: tuple[int, ...] = (1, 5), mistakes: int = 0) -> Evaluation:
    """Accuracy, top-k, per-class accuracy and the confusion matrix of `loaded` on uint8 images
    [N, 3, H, W] with `labels`; and the `mistakes` misclassified images of highest loss."""
    if isinstance(mistakes, bool) or not isinstance(mistakes, int) or mistakes < 0:
        raise ConfigError(f"mistakes must be a whole number at least 0, not {mistakes!r}")
    if not isinstance(ks, (list, tuple)) or not ks or any(
            isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1 for k in ks):
        raise ConfigError(f"ks must be a list of whole numbers of at least 1 (the top-k accuracies), not {ks!r}")
    _check_loaded(loaded)
    c = len(loaded.classes)
    _check_labelled(images_u8, labels, c)
    # In the layout the run trained in (its validation ran so): on the CPU, `classify evaluate` of
    # 10,000 CIFAR-10 images took 42 s against 60 s in NCHW for resnet-fast, 15-18 s against 23 s
    # for simple (same accuracy; a loaded machine). Put back after: the vis engines take this model.
    nhwc = uses_channels_last(loaded.model, loaded.config, as_device(device))
    model = loaded.model.to(memory_format=torch.channels_last) if nhwc else loaded.model
    try:
        logits = predict_logits(model, images_u8, device, tta=tta, channels_last=nhwc)
    finally:
        if nhwc:
            loaded.model.to(memory_format=torch.contiguous_format)
    top = logits.topk(min(max(*ks, 1), c), dim=1).indices
    hits = top == labels[:, None]
    topk = {k: hits[:, :k].any(1).float().mean().item() for k in ks if k <= c}  # (a k above the classes: left out)
    pred = top[:, 0]
    confusion = torch.bincount(labels * c + pred, minlength=c * c).view(c, c)
    totals = confusion.sum(1).clamp(min=1)
    # Classes without an image (a test folder of some of the run's classes) have no accuracy: left out.
    per_class = {name: (confusion[i, i] / totals[i]).item() for i, name in enumerate(loaded.classes)
                 if confusion[i].sum() > 0}
    return Evaluation(hits[:, 0].float().mean().item(), topk, per_class, confusion, int(labels.numel()), tta,
                      _worst(logits, labels, pred, mistakes))


def _worst(logits: torch.Tensor, labels: torch.Tensor, pred: torch.Tensor, k: int) -> list[Mistake]:
    """The k misclassified images with the lowest probability of their actual class."""
    wrong = (pred != labels).nonzero().flatten()
    if not k or not len(wrong):
        return []
    probs = logits[wrong].float().softmax(1)
    p_actual = probs.gather(1, labels[wrong, None])[:, 0]
    order = p_actual.argsort(stable=True)[:k]  # ties: in the data's order
    return [Mistake(int(wrong[i]), int(labels[wrong[i]]), int(pred[wrong[i]]), float(probs[i, pred[wrong[i]]]),
                    float(p_actual[i])) for i in order.tolist()]


def mistake_maps(loaded: LoadedRun, images_u8: torch.Tensor, mistakes: list[Mistake], device) -> list[torch.Tensor]:
    """Grad-CAM of each mistake's predicted class, [H, W] in [0, 1] at the image's size: where in the
    image the net found the evidence for the wrong class."""
    from ..vis.attribution import Target, grad_cam

    net = as_net(loaded)
    maps = []
    for m in mistakes:
        x = images_u8[m.index:m.index + 1].to(device).float().div_(255)
        maps.append(grad_cam(net, x, Target("logits", m.predicted)).cam[0].cpu())
    return maps


@dataclass
class Prediction:
    path: str
    probabilities: torch.Tensor              # [C] float
    top: list[tuple[str, float]]             # (class, probability), best first
    actual: str | None                       # the folder name, when it is one of the classes
    image: Image.Image | None                # as loaded, for the first `keep_images` (figures)


def predict_images(model: nn.Module, classes: list[str], paths: list[str], input_size: int, device,
                   top: int = 5, batch: int = 32, skipped: list[tuple[str, str]] | None = None,
                   keep_images: int = 8, load: Callable[[str], Image.Image] = images.load_image) -> list[Prediction]:
    """Predictions for image files: resized (short side) and centre-cropped to the net's input size.

    An unreadable file raises its ImageError, or, when a `skipped` list is given, is left out and
    recorded there as (path, reason). Only the first `keep_images` predictions keep their image, so a
    large folder does not stay in memory. `load` turns a path into an RGB image (the web UI decodes
    its checked uploads there, one at a time, and keeps a thumbnail of each)."""
    paths = _check_predict_args(model, classes, paths, input_size, top, batch, keep_images)
    device = as_device(device)
    out: list[Prediction] = []
    for start in range(0, len(paths), batch):
        chunk, loaded = [], []
        for i, path in enumerate(paths[start:start + batch], start):
            try:
                if isinstance(path, (str, os.PathLike)):
                    im, path = load(path), str(path)
                else:  # an image already in memory (PIL or a float tensor): named by its position
                    im, path = as_image(path, f"paths[{i}]"), f"<image {i}>"
                if min(im.size) < 1:
                    raise ImageError(f"{path} is an empty {im.width}x{im.height} image")
                loaded.append(im)
                chunk.append(path)
            except ImageError as exc:
                if skipped is None:
                    raise
                skipped.append((path, str(exc)))
        if not chunk:
            continue
        x = torch.stack([images.pil_to_tensor(square_crop(im, input_size))[0] for im in loaded]).to(device)
        with torch.no_grad():
            probs = model(x).float().softmax(1).cpu()
        if probs.shape[1] != len(classes):
            raise ConfigError(f"the model gives {probs.shape[1]} class scores but classes names {len(classes)}; "
                              "pass the class names the model was trained with")
        for path, im, p in zip(chunk, loaded, probs):
            values, idx = p.topk(min(top, len(classes)))
            parent = Path(path).parent.name
            out.append(Prediction(path, p, [(classes[i], v.item()) for v, i in zip(values, idx)],
                                  parent if parent in classes else None, im if len(out) < keep_images else None))
        loaded = im = None  # this chunk's images go before the next chunk is decoded
    return out


def _check_loaded(loaded) -> None:
    if not isinstance(loaded, LoadedRun):
        raise ConfigError(f"loaded must be the LoadedRun that load_run returns, not {type(loaded).__name__}")


def _check_labelled(images_u8, labels, n_classes: int) -> None:
    """ConfigError (one line) unless `images_u8` are uint8 [N, 3, H, W] and `labels` N class indices
    below `n_classes` (float images, or a label past the classes, failed deep inside with a raw
    error)."""
    if not isinstance(images_u8, torch.Tensor) or images_u8.dtype != torch.uint8 or images_u8.dim() != 4 \
            or images_u8.shape[1] != 3:
        what = (f"{images_u8.dtype} {list(images_u8.shape)}" if isinstance(images_u8, torch.Tensor)
                else type(images_u8).__name__)
        raise ConfigError(f"images_u8 must be a uint8 tensor [N, 3, H, W] (ImageData.images), not {what}")
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or list(labels.shape) != [len(images_u8)]:
        what = f"{labels.dtype} {list(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ConfigError(f"labels must be an int64 tensor [{len(images_u8)}], one class index per image, not {what}")
    if not labels.numel():
        raise ConfigError("images_u8 holds no images: nothing to evaluate")
    if not 0 <= int(labels.min()) <= int(labels.max()) < n_classes:
        raise ConfigError(f"labels must be class indices from 0 to {n_classes - 1}, not {int(labels.min())} to "
                          f"{int(labels.max())}")


def _check_predict_args(model, classes, paths, input_size, top, batch, keep_images) -> list:
    """The list of images to predict (one path or image alone is a list of one); ConfigError (one
    line, naming the argument) for the wrong kind of model, classes or numbers."""
    if not callable(model):
        hint = " (for a LoadedRun r: predict_images(r.model, r.classes, paths, r.input_size, device))" \
            if isinstance(model, LoadedRun) else ""
        raise ConfigError(f"model must be a torch module, not {type(model).__name__}{hint}")
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
        raise ConfigError(f"classes must be a list of class names, not {classes!r:.80}")
    for name, value, lo in (("input_size", input_size, 1), ("top", top, 1), ("batch", batch, 1),
                            ("keep_images", keep_images, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
            raise ConfigError(f"{name} must be a whole number of at least {lo}, not {value!r}")
    if isinstance(paths, (str, os.PathLike, Image.Image, torch.Tensor)):
        return [paths]
    return list(paths)

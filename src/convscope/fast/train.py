"""Training the feed-forward networks: one loop for the per-style TransformerNet (Johnson et al.)
and the arbitrary-style AdaIN decoder (Huang & Belongie), or AdaIN-lite (a small encoder distilled
from VGG19's relu4_1, trained together with its decoder).

Each step draws its crops from a generator seeded by (seed, step), so a run resumed from a
checkpoint makes exactly the steps an uninterrupted run would. Checkpoints (weights, Adam state,
step, loss history) and the model file are written atomically every `checkpoint_every` steps.

Files, for `-o OUT.safetensors`:
    OUT.safetensors               the model (what `stylize --model` loads), updated at checkpoints
    OUT.checkpoint.safetensors    what --resume needs
    OUT_previews/step_NNNNNN.png  previews: fixed content images through the network as it trains
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.nn import functional as F

from .. import images
from ..argcheck import as_image, callback_or_none, config_of, flag
from ..devices import keeps_caller_rng, resolve_device
from ..errors import ConfigError
from ..losses import mean_std_loss
from .apply import layout_for, resolve_precision
from .config import TrainArbitraryConfig, TrainCommon, TrainStyleConfig
from .data import CropSampler, TrainingError, image_files
from .losses import PerceptualLoss, lite_losses
from .models import ARBITRARY_KIND, STYLE_KIND, check_model, init_weights, save_model
from .nets import ENCODER_LAYERS, Decoder, Encoder, LiteAdaIN, TransformerNet, adain, channel_stats


@dataclass
class TrainProgress:
    step: int
    steps: int
    losses: dict[str, float]
    seconds: float


@dataclass
class TrainResult:
    path: Path
    steps: int
    seconds: float
    losses: dict[str, float]
    skipped_images: int


# ---- the loop --------------------------------------------------------------------------------
def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.stem + ".checkpoint.safetensors")


def preview_folder(out: Path) -> Path:
    return out.with_name(out.stem + "_previews")


def _autocast_for(device: torch.device, precision: str):
    precision = resolve_precision(device, precision)
    enabled = precision == "bf16"
    return precision, (lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled))


def _lr_at(config: TrainCommon, step: int) -> float:
    return config.lr * (0.5 ** ((step >= config.steps // 2) + (step >= (3 * config.steps) // 4)))


# Options that may change on --resume (how often files are written, where and in what arithmetic
# it runs); every other option defines the run and must match the checkpoint's.
RESUMABLE_CHANGES = ("preview_every", "checkpoint_every", "device", "precision")


def _defining(config: dict) -> dict:
    import json

    return {k: v for k, v in json.loads(json.dumps(config)).items() if k not in RESUMABLE_CHANGES}


def _differences(saved: dict, now: dict) -> list[str]:
    """'--name: checkpoint A, now B' for each option that differs between two `_defining` configs."""
    def shown(v):
        return " ".join(map(str, v)) if isinstance(v, list) else str(v)

    return [f"--{k.replace('_', '-')}: checkpoint {shown(saved.get(k))}, now {shown(now.get(k))}"
            for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]


def _folder_print(root: Path, files: list[Path]) -> str:
    """A digest of a training folder's image files (paths relative to it, and byte sizes): a resumed
    run must draw from the same list, or its crops differ. Relative, so a moved folder still resumes."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.relative_to(root).as_posix()}\t{f.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def _image_print(img: Image.Image) -> str:
    """A digest of the style image's pixels (not its file name: a renamed copy is the same style)."""
    return hashlib.sha256(f"{img.mode} {img.size}".encode() + img.tobytes()).hexdigest()[:16]


def _training_files(folder: str | Path, what: str, out: Path) -> tuple[Path, list[Path]]:
    """The images of a training folder, less this run's own previews: with -o inside that folder
    they would otherwise become training data, and change the list between a run and its --resume."""
    found = image_files(folder, what)
    root = Path(folder).expanduser()
    own = preview_folder(out).resolve()
    kept = [f for f in found if own not in f.resolve().parents]
    if not kept:
        raise TrainingError(f"no images in {root} besides this run's previews in {preview_folder(out)}")
    return root, kept


DATA_NAMES = {"style": "the style image", "content": "the content folder's images",
              "styles": "the style folder's images"}


def _flat_optimizer(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for i, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            out[f"opt.{i}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return out


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = value
    sd["state"] = state
    opt.load_state_dict(sd)


def output_lock(out: str | Path):
    """The lock a training into `out` holds (runlock: one writer per checkpoint). The CLI takes it
    before loading anything; the trainers take it again (a no-op then) for API callers."""
    from ..runlock import exclusive, lock_beside

    out = Path(out).expanduser()
    return exclusive(lock_beside(out), f"the training output {out}")


@torch.enable_grad()  # a caller's torch.no_grad() left the steps without a graph (a RuntimeError)
def _train(kind: str, net: torch.nn.Module, step_losses: Callable, config: TrainCommon, out: Path,
           device: torch.device, previews: torch.Tensor, meta: dict, resume: bool,
           callback: Callable[[TrainProgress], None] | None, skipped: Callable[[], int],
           preview_net: torch.nn.Module | None = None, data: dict[str, str] | None = None) -> TrainResult:
    from ..classify.run import load_tensors, remove_stale_temps, save_tensors

    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    ckpt = checkpoint_path(out)
    start, history, spent = 0, [], 0.0
    check_start(out, resume, kind)  # again, under the lock: another process may have written since
    if resume:
        tensors, saved = load_tensors(ckpt)
        remove_stale_temps(out.parent, {out.name, ckpt.name})  # writes a kill cut short, previews' too
        remove_stale_temps(preview_folder(out))
        # Options added since the checkpoint was written count as their defaults.
        saved_config = {**type(config)().to_dict(), **(saved.get("config") or {})}
        if saved.get("kind") != kind:
            raise TrainingError(f"{ckpt} was made by a different model kind ({saved.get('kind')}); "
                                "start a new output file")
        differ = _differences(_defining(saved_config), _defining(config.to_dict()))
        if differ:
            # --steps sets the learning-rate schedule, so a longer run is a new one started from this model.
            longer = (" (to train a finished model further, start a new output with --init "
                      f"{out})") if any(d.startswith("--steps:") for d in differ) else ""
            raise TrainingError(f"{ckpt} was made with other options ({'; '.join(differ)}); resume with "
                                f"the same options, or start a new output file{longer}")
        # The training images define the run as much as the options do (checkpoints from before this
        # check have no "data": they resume unchecked).
        changed = [DATA_NAMES.get(k, k) for k, v in (saved.get("data") or {}).items() if (data or {}).get(k) != v]
        if changed:
            raise TrainingError(f"{ckpt} was made with other training images ({' and '.join(changed)} changed); "
                                "resume with the same images, or start a new output file")
        net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        _restore_optimizer(opt, tensors)
        start, history, spent = int(saved["step"]), list(saved.get("history", [])), float(saved.get("seconds", 0))
    elif config.init:
        init_weights(net, kind, config.init)
    net.train()
    began = time.perf_counter()
    losses: dict[str, float] = {}
    sums: dict[str, float] = {}
    for step in range(start, config.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(config, step)
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        terms = step_losses(gen)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        values = {k: float(v.detach()) for k, v in terms.items()}
        if not math.isfinite(values["loss"]):
            raise TrainingError(f"the loss became {values['loss']} at step {step + 1}; lower --lr or the weights")
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
        done = step + 1
        elapsed = spent + time.perf_counter() - began
        if callback is not None:
            callback(TrainProgress(done, config.steps, values, elapsed))
        if config.preview_every and (done % config.preview_every == 0 or done == config.steps):
            _write_preview(preview_net or net, previews, out, done)
        if done % config.checkpoint_every == 0 or done == config.steps:
            n = max(1, done - (history[-1]["step"] if history else start))
            losses = {k: v / n for k, v in sums.items()}
            history.append({"step": done, **{k: round(v, 6) for k, v in losses.items()}})
            sums = {}
            info = {**meta, "steps": done, "seconds": round(elapsed, 1), "final_losses": history[-1]}
            save_model(out, kind, net, info)
            save_tensors(ckpt, {**{f"model.{k}": v for k, v in net.state_dict().items()}, **_flat_optimizer(opt)},
                         {"kind": kind, "config": config.to_dict(), "step": done, "history": history,
                          "seconds": elapsed, "data": data or {}})
    if start >= config.steps and not out.exists():  # a finished run's model, deleted since: its checkpoint holds it
        save_model(out, kind, net, {**meta, "steps": start, "seconds": round(spent, 1),
                                    "final_losses": history[-1] if history else {}})
    net.eval()
    return TrainResult(out, config.steps, spent + time.perf_counter() - began,
                       {k: v for k, v in (history[-1] if history else {}).items() if k != "step"}, skipped())


@torch.no_grad()
def _write_preview(net: torch.nn.Module, previews: torch.Tensor, out: Path, step: int) -> None:
    if previews is None or not len(previews):
        return
    was = net.training
    net.eval()
    y = net(previews)
    net.train(was)
    row = torch.cat([torch.cat(list(previews), -1), torch.cat(list(y.float().clamp(0, 1)), -1)], -2)
    folder = preview_folder(out)
    folder.mkdir(exist_ok=True)
    images.save_image(row, folder / f"step_{step:06d}.png")


def check_start(out: Path, resume: bool, kind: str, init: str | None = None) -> None:
    """TrainingError (or --init's ModelError) where the files beside `out` or `init` rule the run
    out: all known from a few file headers, so said before any image or network loads."""
    ckpt = checkpoint_path(out)
    if resume and not ckpt.is_file():
        raise TrainingError(f"nothing to resume: {ckpt} " + ("is a folder, not a checkpoint" if ckpt.is_dir()
                                                              else "does not exist (start without --resume)"))
    if not resume and (ckpt.exists() or out.exists()):
        raise TrainingError(f"{out if out.exists() else ckpt} already exists; add --resume to continue that run, "
                            "or choose another output file")
    if init and not resume:  # a resumed run starts from its checkpoint, not from --init
        check_model(init, kind, wrong_kind_hint="")


def _prepare(config: TrainCommon, expected: type, out: str | Path, resume, callback,
             card, kind: str) -> tuple[Path, torch.device]:
    config_of(config, expected)
    config.validate()
    if not isinstance(out, (str, os.PathLike)):
        raise ConfigError(f"out must be the path of a .safetensors file, not {type(out).__name__}")
    flag(resume, "resume")
    callback_or_none(callback, "TrainProgress")
    if card is not None and not isinstance(card, dict):
        raise ConfigError(f"card must be a dict of model-card fields (or None), not {type(card).__name__}")
    path = Path(out).expanduser()
    if path.suffix != ".safetensors":
        raise ConfigError(f"the output must be a .safetensors file, not {path.name}")
    images.check_output_file(path, "style.safetensors")
    check_start(path, resume, kind, config.init)
    previews = preview_folder(path)
    if config.preview_every and previews.exists() and not previews.is_dir():  # (mkdir's traceback at the first preview)
        raise TrainingError(f"{previews}, where the previews go, is a file: move it, or add --preview-every 0")
    device = resolve_device(config.device)
    # The nets' initialization draws from the CPU generator (they are built there); nothing here draws
    # from a GPU's, so its state is left alone.
    torch.default_generator.manual_seed(config.seed)
    return path, device


@keeps_caller_rng
def train_style(style: str | Path | Image.Image, content_dir: str | Path, out: str | Path,
                config: TrainStyleConfig | None = None, resume: bool = False,
                callback: Callable[[TrainProgress], None] | None = None, card: dict | None = None) -> TrainResult:
    """Train a TransformerNet for one style on crops of the images in `content_dir`."""
    # (a copy: validate() turns a single style layer's name into a tuple, not in the caller's config)
    config = TrainStyleConfig() if config is None else copy.copy(config)
    path, device = _prepare(config, TrainStyleConfig, out, resume, callback, card, STYLE_KIND)
    style_img = as_image(style, "style")
    root, files = _training_files(content_dir, "content", path)
    sampler = CropSampler(files, config.size, "content")
    precision, autocast = _autocast_for(device, config.precision)
    style_t = images.pil_to_tensor(images.resize_long_side(style_img, config.style_size), device)
    layout = layout_for(device)
    loss = PerceptualLoss(style_t, config, device, autocast, layout)
    net = TransformerNet(tuple(config.widths), config.residual_blocks).to(device, memory_format=layout)
    previews = sampler.sample(min(3, config.batch_size), torch.Generator().manual_seed(config.seed + 99)).to(device)

    def step_losses(gen):
        content = sampler.sample(config.batch_size, gen).to(device, non_blocking=True).contiguous(memory_format=layout)
        with autocast():
            output = net(content)
        return loss(output, content)

    named = {"style_image": Path(style).name} if isinstance(style, (str, os.PathLike)) else {}
    meta = {"card": {**named, **(card or {})},
            "config": {**config.to_dict(), "precision": precision, "device": str(device)}}
    data = {"style": _image_print(style_img), "content": _folder_print(root, files)}
    with output_lock(path):
        return _train(STYLE_KIND, net, step_losses, config, path, device, previews, meta, resume, callback,
                      lambda: len(sampler.skipped), data=data)


class ArbitraryStylizer(torch.nn.Module):
    """Encoder + decoder as one module for previews: content halves of a batch styled by the
    other half (used during training only)."""

    def __init__(self, encoder: Encoder, decoder: Decoder, styles: torch.Tensor):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.styles = styles

    def forward(self, content: torch.Tensor) -> torch.Tensor:
        s = self.encoder(self.styles[:len(content)])["relu4_1"]
        c = self.encoder(content)["relu4_1"]
        return self.decoder(adain(c, *channel_stats(s)))


@keeps_caller_rng
def train_arbitrary(content_dir: str | Path, style_dir: str | Path, out: str | Path,
                    config: TrainArbitraryConfig | None = None, resume: bool = False,
                    callback: Callable[[TrainProgress], None] | None = None, card: dict | None = None) -> TrainResult:
    """Train an AdaIN decoder (or, with encoder "lite", an AdaIN-lite encoder and decoder): content
    crops restyled with style crops, Huang & Belongie's losses on VGG19."""
    config = TrainArbitraryConfig() if config is None else config
    path, device = _prepare(config, TrainArbitraryConfig, out, resume, callback, card, ARBITRARY_KIND)
    (content_root, content_files), (style_root, style_files) = (_training_files(content_dir, "content", path),
                                                                _training_files(style_dir, "style", path))
    contents = CropSampler(content_files, config.size, "content")
    styles = CropSampler(style_files, config.size, "style")
    precision, autocast = _autocast_for(device, config.precision)
    lite, layout = config.encoder == "lite", layout_for(device)
    # The lite model is built first (loading VGG19 draws no random numbers: nets._pretrained).
    net = LiteAdaIN(tuple(config.widths), tuple(config.encoder_widths)) if lite else None
    encoder = Encoder().to(device, memory_format=layout)
    net = (net if lite else Decoder(tuple(config.widths))).to(device, memory_format=layout)
    gen = torch.Generator().manual_seed(config.seed + 99)
    k = min(3, config.batch_size)
    # Previews run the whole stylizer (the lite model's own encoder, or VGG19 and the decoder).
    preview_net = ArbitraryStylizer(net.encoder if lite else encoder, net.decoder if lite else net,
                                    styles.sample(k, gen).to(device))
    previews = contents.sample(k, gen).to(device)

    def step_losses(gen):
        c = contents.sample(config.batch_size, gen).to(device, non_blocking=True).contiguous(memory_format=layout)
        s = styles.sample(config.batch_size, gen).to(device, non_blocking=True).contiguous(memory_format=layout)
        if lite:
            return lite_losses(net, encoder, c, s, config, autocast)
        with autocast():
            with torch.no_grad():
                cf = encoder(c)["relu4_1"]
                sf = encoder(s)
                t = adain(cf, *channel_stats(sf["relu4_1"]))
            output = net(t)
            of = encoder(output)
        content_loss = F.mse_loss(of["relu4_1"].float(), t.float())
        style_loss = sum(mean_std_loss(of[n].float(), sf[n].float()) for n in ENCODER_LAYERS)
        return {"loss": content_loss + config.style_weight * style_loss, "content": content_loss,
                "style": style_loss}

    meta = {"card": dict(card or {}), "config": {**config.to_dict(), "precision": precision, "device": str(device)}}
    # Training updates the decoder (and the lite encoder); VGG19 stays frozen.
    with output_lock(path):
        return _train(ARBITRARY_KIND, net, step_losses, config, path, device, previews, meta, resume, callback,
                      lambda: len(contents.skipped) + len(styles.skipped), preview_net=preview_net,
                      data={"content": _folder_print(content_root, content_files),
                            "styles": _folder_print(style_root, style_files)})

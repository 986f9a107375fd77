"""Model files of the feed-forward style networks: safetensors weights + JSON in the header.

Two kinds:
    convscope-fast-style      a TransformerNet trained for one style (`convscope train-style`)
    convscope-arbitrary-style an AdaIN decoder (`convscope train-arbitrary`); the encoder is the
                              original VGG19, loaded from its own package, never stored here;
                              or, when the `arch` has an `encoder` entry, an AdaIN-lite model
                              (LiteAdaIN: its distilled encoder and its decoder, keys encoder.* and
                              decoder.*; `train-arbitrary --encoder lite`).
Built-in models live in `convscope/fast/models/NAME.safetensors` (fp16), each with its model card
in the header (`card`: the painting, a one-line description, data, steps, losses, time).
"""

from __future__ import annotations

import importlib.resources
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..devices import as_device
from ..errors import ConfigError, UserError
from ..nets.base import suggest
from .nets import LITE_CONVS, Decoder, LiteAdaIN, TransformerNet, can_grow, grow_into

STYLE_KIND = "convscope-fast-style"
ARBITRARY_KIND = "convscope-arbitrary-style"
KINDS = {STYLE_KIND: "a feed-forward style network (convscope train-style)",
         ARBITRARY_KIND: "an arbitrary-style decoder (convscope train-arbitrary)"}
ARBITRARY_BUILTIN = "adain-lite"  # the default built-in arbitrary-style model (the VGG19 one: "adain")
MAX_MODEL_BYTES = 512 * 2 ** 20


class ModelError(UserError):
    """A style model that cannot be used: unknown name, missing, damaged, or of the wrong kind."""


@dataclass
class StyleModel:
    kind: str
    net: torch.nn.Module
    meta: dict = field(default_factory=dict)
    source: str = ""

    @property
    def card(self) -> dict:
        return self.meta.get("card", {})


def builtin_folder() -> Path:
    return Path(str(importlib.resources.files("convscope.fast") / "models"))


_KIND_CACHE: dict[tuple[str, int, int], str | None] = {}


def builtin_kind(path: Path) -> str | None:
    """The kind in a shipped file's header (cached per file version); None when unreadable."""
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _KIND_CACHE:
        try:
            _KIND_CACHE[key] = read_header(path).get("kind")
        except ModelError:
            _KIND_CACHE[key] = None
    return _KIND_CACHE[key]


def builtin_names(kind: str | None = None) -> list[str]:
    """Names of the shipped models, all or those of one kind (by the kind in each file's header)."""
    paths = sorted(builtin_folder().glob("*.safetensors"), key=lambda p: p.stem)
    return [p.stem for p in paths if kind is None or builtin_kind(p) == kind]


def _lite_arch(arch: dict) -> dict:
    encoder = arch["encoder"]
    if not isinstance(encoder, dict) or "widths" not in encoder:
        raise ValueError("its encoder entry has no widths")
    return {"encoder_widths": _counts(encoder["widths"], 4, "encoder widths", 1024),
            "encoder_convs": _counts(encoder.get("convs", LITE_CONVS), 4, "encoder convs", 16)}


def _counts(values, n: int, what: str, high: int) -> tuple[int, ...]:
    """`n` whole numbers from 1 to `high` read from a model header, else ValueError. The trainers
    make nothing larger; a damaged or crafted header could otherwise ask for negative layer sizes
    (a torch traceback), a network of many GB or a loop of millions of blocks."""
    values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
    if len(values) != n or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= high for v in values):
        raise ValueError(f"its {what} must be {n} whole number(s) from 1 to {high}, not {list(values)}")
    return values


def build_net(kind: str, meta: dict) -> torch.nn.Module:
    arch = meta.get("arch", {})
    try:
        if kind == STYLE_KIND:
            return TransformerNet(_counts(arch.get("widths", (16, 32, 48)), 3, "widths", 1024),
                                  _counts(arch.get("residual_blocks", 5), 1, "residual blocks", 64)[0])
        widths = _counts(arch.get("widths", (128, 64, 32)), 3, "widths", 1024)
        if "encoder" in arch:
            return LiteAdaIN(widths, **_lite_arch(arch))
        return Decoder(widths)
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as exc:
        raise ModelError(f"the model's architecture record is damaged ({arch}): {exc}") from None


def net_state(net: torch.nn.Module, half: bool = False) -> dict[str, torch.Tensor]:
    dtype = torch.float16 if half else torch.float32
    return {k: v.detach().to("cpu", dtype).contiguous() for k, v in net.state_dict().items()}


def arch_of(net: torch.nn.Module) -> dict:
    if isinstance(net, TransformerNet):
        return {"widths": list(net.widths), "residual_blocks": net.residual_blocks}
    if isinstance(net, LiteAdaIN):
        return {"widths": list(net.widths),
                "encoder": {"widths": list(net.encoder.widths), "convs": list(net.encoder.convs)}}
    return {"widths": list(net.widths)}


def save_model(path: str | Path, kind: str, net: torch.nn.Module, meta: dict, half: bool = False) -> Path:
    """Atomically write a model file (weights as fp16 with `half`)."""
    from ..classify.run import save_tensors

    return save_tensors(Path(path), net_state(net, half), {"kind": kind, "arch": arch_of(net), **meta})


def resolve(name_or_file: str, kind: str | None = None) -> Path:
    """A built-in name or a file path -> the model file; ModelError with suggestions (among the
    built-ins of `kind`, or all of them) otherwise."""
    if not isinstance(name_or_file, (str, os.PathLike)):
        raise ModelError(f"a style model is a built-in name or a .safetensors file path, not "
                         f"{type(name_or_file).__name__}")
    text = str(name_or_file)
    if text in builtin_names():
        return builtin_folder() / f"{text}.safetensors"
    p = Path(text).expanduser()
    if p.suffix or "/" in text or "\\" in text or p.exists():
        if not p.is_file():
            raise ModelError(f"model file not found: {p}" if not p.exists() else f"{p} is not a file")
        return p
    names = builtin_names(kind)
    raise ModelError(f"unknown style model {text!r}{suggest(text, names)}; built-in: {', '.join(names) or 'none'} "
                     "(list them with: convscope styles), or give a .safetensors file")


def read_header(path: Path) -> dict:
    """The JSON metadata of a model file, without loading its weights."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
        meta = json.loads(header.get("convscope", "{}"))
    except Exception as exc:  # not safetensors, truncated, bad JSON ...
        raise ModelError(f"{path} is damaged or not a convscope model file ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{path} is damaged or not a convscope model file (its 'convscope' metadata is "
                         f"a {type(meta).__name__}, not a JSON object)")
    return meta


def check_model(name_or_file: str | Path, kind: str | None = None,
                wrong_kind_hint: str | None = None) -> tuple[Path, dict, str, int]:
    """What load_model checks before it reads a weight (the name or file, its size, its header, its
    kind), with its ModelErrors: (path, header, kind, size in bytes). Cheap: a trainer calls it for
    --init before its data and VGG19 load."""
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"kind must be None, {STYLE_KIND!r} or {ARBITRARY_KIND!r}, not {kind!r}")
    path = resolve(name_or_file, kind)
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ModelError(f"{path} is {size / 2**20:.0f} MB: too big to be a style model")
    meta = read_header(path)
    if "step" in meta and "history" in meta:  # the layout train.py gives OUT.checkpoint.safetensors
        model = path.name.removesuffix(".checkpoint.safetensors")
        beside = f": {path.with_name(model + '.safetensors')}" if model != path.name else ""
        raise ModelError(f"{path} is a training checkpoint (what --resume continues from), not a model; "
                         f"give the model file written beside it{beside}")
    found = meta.get("kind")
    if kind is None and found in KINDS:
        kind = found
    if kind is None:
        raise ModelError(f"{path} is not a convscope style model")
    if found != kind:
        what = KINDS.get(found, "not a convscope style model")
        hint = ("; use --method arbitrary for it" if found == ARBITRARY_KIND else
                "; use it with --model" if found == STYLE_KIND else "")
        hint = wrong_kind_hint if wrong_kind_hint is not None and found in KINDS else hint
        raise ModelError(f"{path} is {what}, but {KINDS[kind]} is needed here{hint}")
    return path, meta, kind, size


def load_model(name_or_file: str | Path, kind: str | None = None, device: torch.device | str = "cpu",
               wrong_kind_hint: str | None = None) -> StyleModel:
    """Load a built-in or trained model of `kind` (fp32 on `device`, in eval mode); kind None takes
    either kind, the file's. A model of the other kind is a ModelError that says where it is used
    (or `wrong_kind_hint`, when given)."""
    from safetensors.torch import load_file

    device = as_device(device)
    path, meta, kind, size = check_model(name_or_file, kind, wrong_kind_hint)
    try:
        with torch.device("meta"):  # shapes only: a crafted header cannot make us allocate first
            weights = sum(t.numel() for t in build_net(kind, meta).state_dict().values())
        if size < 2 * weights:  # the files hold fp16 or fp32 weights
            raise ModelError(f"its header describes {weights:,} weights, more than its {size:,} bytes can hold")
        with torch.random.fork_rng(devices=[]):  # the initialization the weights replace: not from the caller's RNG
            net = build_net(kind, meta)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    try:
        state = load_file(str(path))
        net.load_state_dict({k: v.float() for k, v in state.items()})
    except Exception as exc:
        raise ModelError(f"{path} does not hold the weights its header describes ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    return StyleModel(kind, net.to(device).eval().requires_grad_(False), meta, str(path))


def init_weights(net: torch.nn.Module, kind: str, init: str) -> None:
    """Copy the weights of model `init` (built-in name or file, of `kind`) into `net`; ConfigError when
    its architecture differs. A style network may grow: `net` may have more residual blocks and wider
    stages than `init` (nets.grow_into: it starts out computing `init`'s function). An AdaIN-lite
    model may also start from a plain decoder of its decoder's widths (e.g. the built-in adain): the
    decoder is copied, the encoder starts from random weights."""
    # The wrong kind is said without load_model's hint, which names the options of `stylize`.
    source = load_model(init, kind, wrong_kind_hint="")
    if isinstance(net, LiteAdaIN) and isinstance(source.net, Decoder):
        if source.net.widths != net.decoder.widths:
            raise ConfigError(f"--init {init}: its decoder widths {list(source.net.widths)} differ from this "
                              f"training's {list(net.decoder.widths)}; set the same --widths, or leave out --init")
        net.decoder.load_state_dict(source.net.state_dict())
        return
    if isinstance(net, TransformerNet) and isinstance(source.net, TransformerNet) and can_grow(source.net, net):
        grow_into(source.net, net)  # the same architecture, or a larger one computing the same function
        return
    if arch_of(source.net) != arch_of(net):
        # Named as the options that set them (train-arbitrary has no --residual-blocks).
        def shown(arch: dict) -> str:
            flat = {k: v for k, v in arch.items() if k != "encoder"}
            if "encoder" in arch:  # AdaIN-lite: its encoder's stages
                flat["encoder_widths"] = arch["encoder"]["widths"]
            return " ".join(f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                            for k, v in flat.items())

        what = ("the same --widths and --residual-blocks, or larger ones" if isinstance(net, TransformerNet)
                else "the same --widths")
        raise ConfigError(f"--init {init}: its architecture ({shown(arch_of(source.net))}) differs from this "
                          f"training's ({shown(arch_of(net))}); set {what}, or leave out --init")
    net.load_state_dict(source.net.state_dict())


def list_styles() -> list[dict]:
    """The built-in models with their cards: name, kind, painting, description."""
    rows = []
    for name in builtin_names():
        meta = read_header(builtin_folder() / f"{name}.safetensors")
        card = meta.get("card", {})
        rows.append({"name": name, "kind": "arbitrary" if meta.get("kind") == ARBITRARY_KIND else "feed-forward",
                     "painting": card.get("painting", ""), "description": card.get("description", ""),
                     "card": card})
    return rows

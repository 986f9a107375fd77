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
The names, headers and checks that need no torch are in `catalog` (imported here too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..devices import as_device
from ..errors import ConfigError
from .catalog import (ARBITRARY_BUILTIN, ARBITRARY_KIND, KINDS, MAX_MODEL_BYTES, STYLE_KIND,  # noqa: F401
                      ModelError, builtin_folder, builtin_kind, builtin_names, check_model, list_styles,
                      read_header, resolve)
from .nets import LITE_CONVS, Decoder, LiteAdaIN, TransformerNet, can_grow, grow_into


@dataclass
class StyleModel:
    kind: str
    net: torch.nn.Module
    meta: dict = field(default_factory=dict)
    source: str = ""

    @property
    def card(self) -> dict:
        return self.meta.get("card", {})


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

"""The style model files' catalogue, without torch: the built-in models, their names and kinds,
a name or file resolved to its file, a file's header read and checked (safetensors' JSON header,
read without loading a weight), and the built-in styles listed with their cards. `convscope styles`
runs on this alone; `models` builds the networks and loads the weights.
"""

from __future__ import annotations

import importlib.resources
import json
import os
from pathlib import Path

from ..errors import ConfigError, UserError
from ..options import suggest

STYLE_KIND = "convscope-fast-style"
ARBITRARY_KIND = "convscope-arbitrary-style"
KINDS = {STYLE_KIND: "a feed-forward style network (convscope train-style)",
         ARBITRARY_KIND: "an arbitrary-style decoder (convscope train-arbitrary)"}
ARBITRARY_BUILTIN = "adain-lite"  # the default built-in arbitrary-style model (the VGG19 one: "adain")
MAX_MODEL_BYTES = 512 * 2 ** 20


class ModelError(UserError):
    """A style model that cannot be used: unknown name, missing, damaged, or of the wrong kind."""


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
        with safe_open(str(path), "np") as f:  # "np": the header alone, without loading torch
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

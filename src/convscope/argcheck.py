"""Checks of the Python API's arguments: a one-line ConfigError that names the argument, where a
wrong kind of value would otherwise fail deep inside an engine (or, for a flag, silently count as
True). The config dataclasses check their own fields; these are the arguments around them."""

from __future__ import annotations

from .errors import ConfigError


def _a(name: str) -> str:
    return f"an {name}" if name[:1] in "AEIOU" else f"a {name}"


def config_of(config, *kinds: type, note: str = ""):
    """`config` if it is an instance of one of `kinds`, else a ConfigError (a dict gets the hint to
    build one from it; `note` is added for any other value)."""
    if isinstance(config, kinds):
        return config
    names = " or ".join(k.__name__ for k in kinds)
    hint = "; use " + " or ".join(f"{k.__name__}(**d)" for k in kinds) if isinstance(config, dict) else note
    raise ConfigError(f"config must be {_a(names)}, not {type(config).__name__}{hint}")


def callback_or_none(callback, takes: str):
    """`callback` if it is None or callable, else a ConfigError (it would fail only at its first call)."""
    if callback is not None and not callable(callback):
        raise ConfigError(f"callback must be a function taking {_a(takes)} (or None), not {type(callback).__name__}")
    return callback


def flag(value, name: str) -> bool:
    """`value` if it is a bool, else a ConfigError ("no" would count as True)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, not {value!r}")
    return value

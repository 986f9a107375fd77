"""Fast style transfer: feed-forward networks trained per style (Johnson et al. 2016) and
arbitrary style in one pass (AdaIN, Huang & Belongie 2017), their training, video and export.

    >>> from convscope.fast import FastStylizer, ArbitraryStylizer
    >>> FastStylizer("starry_night")(photo)                 # a PIL image, the photo's size
    >>> ArbitraryStylizer(config=FastConfig(alpha=0.8))(photo, [painting])   # any style image

The names below load on first use (PEP 562), so importing `convscope.fast.config` (the options,
which the CLI reads) does not load torch and the engines.
"""

from __future__ import annotations

import importlib
import importlib.util

# name -> the submodule that defines it
_EXPORTS = {
    "ArbitraryStylizer": "apply",
    "FastConfig": "config",
    "FastStylizer": "apply",
    "TrainArbitraryConfig": "config",
    "TrainStyleConfig": "config",
    "list_styles": "catalog",
    "load_model": "models",
    "train_arbitrary": "train",
    "train_style": "train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f".{name}", __name__)  # a submodule (convscope.fast.apply, ...)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

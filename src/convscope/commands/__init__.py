"""CLI subcommands that live in their own modules.

Each module here defines `register(subparsers) -> None`, which adds its parser with
`set_defaults(func=...)`; `func(args) -> int` runs it. The CLI discovers every module in this
package, so adding a command means adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil


def register_all(subparsers) -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}").register(subparsers)

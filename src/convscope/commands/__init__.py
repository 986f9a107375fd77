"""CLI subcommands that live in their own modules.

Each module here defines `register(subparsers) -> None`, which adds its parser with
`set_defaults(func=...)`; `func(args) -> int` runs it. The CLI discovers every module in this
package, so adding a command means adding a file; a module whose name starts with "_" holds part
of another command and is not one itself.
"""

from __future__ import annotations

import importlib
import pkgutil


def register_all(subparsers) -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"{__name__}.{info.name}").register(subparsers)

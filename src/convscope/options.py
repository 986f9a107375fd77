"""Shared pieces of the config dataclasses that every engine's options are built from.

Each engine's config is a dataclass whose fields carry their CLI help and choices in metadata;
`convscope.cli.add_config_options` turns them into --options, so defaults live in one place.
"""

from __future__ import annotations

from dataclasses import field, fields

from .errors import ConfigError

POOLINGS = ("max", "avg")
PRECISIONS = ("auto", "fp32", "tf32", "bf16")
PRECISION_HELP = ("arithmetic: auto (tf32 on CUDA; bf16 on CPUs with native bf16, else fp32), "
                  "fp32, tf32, bf16")


def option(help: str, default, **meta):
    """A dataclass field carrying its CLI help text (and `choices=` when it has them)."""
    return field(default=default, metadata={"help": help, **meta})


def check_choices(config) -> None:
    """ConfigError (one line) for the first field whose value is not among its metadata choices."""
    for f in fields(config):
        choices = f.metadata.get("choices")
        if choices and getattr(config, f.name) not in choices:
            raise ConfigError(f"--{f.name.replace('_', '-')} must be one of {', '.join(choices)}, "
                              f"not {getattr(config, f.name)!r}")

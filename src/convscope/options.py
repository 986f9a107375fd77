"""Shared pieces of the config dataclasses that every engine's options are built from.

Each engine's config is a dataclass whose fields carry their CLI help and choices in metadata;
`convscope.cli.add_config_options` turns them into --options, so defaults live in one place.
"""

from __future__ import annotations

from dataclasses import field

POOLINGS = ("max", "avg")
PRECISIONS = ("auto", "fp32", "tf32", "bf16")
PRECISION_HELP = ("arithmetic: auto (tf32 on CUDA; bf16 on CPUs with native bf16, else fp32), "
                  "fp32, tf32, bf16")


def option(help: str, default, **meta):
    """A dataclass field carrying its CLI help text (and `choices=` when it has them)."""
    return field(default=default, metadata={"help": help, **meta})

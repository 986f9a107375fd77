"""Shared pieces of the config dataclasses that every engine's options are built from.

Each engine's config is a dataclass whose fields carry their CLI help and choices in metadata;
`convscope.cli.add_config_options` turns them into --options, so defaults live in one place.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable
from dataclasses import MISSING, field, fields

from .errors import ConfigError

POOLINGS = ("max", "avg")
PRECISIONS = ("auto", "fp32", "tf32", "bf16")
PRECISION_HELP = ("arithmetic: auto (tf32 on CUDA; bf16 on CPUs with native bf16, else fp32), "
                  "fp32, tf32, bf16")


# What --net takes wherever any network will do (one wording for every command).
NET_HELP = ("network: vgg19 (original ImageNet weights, bundled), efficientnet_lite0 (bundled), any torchvision "
            "classifier (NAME:random = random weights), or a classify run folder")
# Names the engines accept, here so that configs can offer them as choices without loading torch:
# losses.gram's normalizations, losses.tv_loss's kinds, optimize's optimizers.
GRAM_NORMS = ("relative", "gatys", "hw", "chw")
TV_KINDS = ("squared", "beta")
OPTIMIZERS = ("lbfgs", "adam", "sgd")
# The largest step size optimize takes: far above any useful one (defaults 0.02 to 1), and below
# float32's range, which L-BFGS's step tensor overflowed (--lr 1e308: a RuntimeError traceback).
MAX_LR = 1e6


def check_max_lr(lr: float) -> None:
    """ConfigError for a step size above MAX_LR (the configs call it after their positivity check)."""
    if lr > MAX_LR:
        raise ConfigError(f"--lr must be at most {MAX_LR:g}, not {lr!r}")


# Layer names with a meaning of their own: the net's own choice (nets.auto_layer), and a
# classifier's output (nets.hooked).
AUTO = "auto"
LOGITS = "logits"

# The built-in networks' registry names (convscope.nets.NETS holds their builders, in this order) and
# short aliases: here, without torch, so that the CLI can list them in --help at once.
BUILTIN_NETS = ("vgg19", "vgg19-torchvision", "vgg16-torchvision", "efficientnet_lite0")
NET_ALIASES = {"vgg16": "vgg16-torchvision", "efficientnet-lite0": "efficientnet_lite0"}


RANDOM = ":random"  # NAME:random: a net's architecture at random initialization (nets.get_net)


def net_names() -> list[str]:
    return [*BUILTIN_NETS, *NET_ALIASES]


# A torchvision classifier is registered by `@register_model()` (or `@register_model(name="...")`)
# above its builder function (other decorators, on one line or several, may come between), in a
# module directly inside torchvision/models/: the models that
# torchvision.models.list_models(module=torchvision.models) lists (a test keeps the two equal).
_DECORATOR = re.compile(r"^[ \t]*@register_model\(", re.M)
_NAME_ARG = re.compile(r"\s*(?:name\s*=\s*)?(?:[\"']([^\"']+)[\"'])?\s*\)")
_DEF = re.compile(r"^[ \t]*def\s+(\w+)", re.M)


def registered_names(source: str) -> list[str] | None:
    """The model names a torchvision module's source registers; None when one of its
    `@register_model(...)` does not read as expected (then no name may be refused by it)."""
    names = []
    for part in _DECORATOR.split(source)[1:]:
        arg, builder = _NAME_ARG.match(part), _DEF.search(part)
        if arg is None or builder is None:
            return None
        names.append(arg.group(1) or builder.group(1))
    return names


@functools.lru_cache(maxsize=1)
def torchvision_model_names() -> frozenset[str] | None:
    """The classifiers the installed torchvision registers, read from its source files without
    importing it (importing torchvision loads torch: 1-2 s before an unknown --net could be refused);
    None when torchvision is not installed or its source does not read as expected."""
    import importlib.util
    from pathlib import Path

    try:
        spec = importlib.util.find_spec("torchvision")
        folders = list(spec.submodule_search_locations or []) if spec else []
        found = [registered_names(path.read_text(encoding="utf-8", errors="replace"))
                 for folder in folders for path in sorted(Path(folder, "models").glob("*.py"))]
    except (OSError, ImportError, ValueError):
        return None
    if any(names is None for names in found):
        return None
    names = {name for names in found for name in names}
    return frozenset(names) if len(names) >= 10 else None  # a few or none: a layout this does not know


def unknown_net(name: str, torchvision_names) -> ConfigError:
    """The refusal of a net name that is neither built in nor a torchvision classifier."""
    return ConfigError(f"unknown net {name!r}{suggest(name, net_names() + sorted(torchvision_names))}; "
                       f"choose from {', '.join(net_names())} or any torchvision classification model "
                       f"(resnet18, densenet121, mobilenet_v3_small, ...)")


def check_net_name(name, also: Iterable[str] = ()) -> None:
    """The CLI's cheap check of --net, before torch loads: unknown_net for a name that is certainly
    not a net (`also`: more names the command takes). Paths (run folders) and anything it cannot
    decide are left to nets.get_net, which checks them all again."""
    import os

    if isinstance(name, str) and not name.strip():  # ('' is the current folder: a run there was used)
        raise ConfigError(f"--net needs a name: {', '.join(net_names())}, a torchvision classifier or a "
                          "classify run folder")
    if not isinstance(name, str) or "/" in name or os.sep in name or os.path.exists(os.path.expanduser(name)):
        return
    base = NET_ALIASES.get(name, name).removesuffix(RANDOM)
    if base in BUILTIN_NETS or name in also:
        return
    names = torchvision_model_names()
    if names is not None and base not in names:
        raise unknown_net(name, names)


def suggest(name: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def option(help: str, default, **meta):
    """A dataclass field carrying its CLI help text (and `choices=` when it has them)."""
    return field(default=default, metadata={"help": help, **meta})


def documented(cls):
    """Class decorator (above @dataclass): append each field's default and help to the docstring, so
    help(StyleConfig) in a notebook lists the options as `--help` does."""
    def default(f):
        return f.default_factory() if f.default is MISSING else f.default

    lines = [f"    {f.name} = {default(f)!r}: {f.metadata['help']}" for f in fields(cls) if "help" in f.metadata]
    cls.__doc__ = f"{(cls.__doc__ or cls.__name__).rstrip()}\n\nFields (default: meaning):\n" + "\n".join(lines)
    return cls


_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_indices(spec: str, what: str = "--channels", most: int = 100_000) -> list[int]:
    """'0-15' -> 0..15, '3,7,9' -> [3, 7, 9], '5' -> [5] (mixes too: '0-3,8'), in the order given,
    repeats dropped; at most `most` of them. ConfigError (one line) otherwise."""
    out: list[int] = []
    for part in str(spec).split(","):
        m = _RANGE.match(part)
        if not m:
            raise ConfigError(f"{what} must be like 0-15, 3,7,9 or 5, not {spec!r}")
        if m.group(2) is not None and int(m.group(2)) < int(m.group(1)):
            raise ConfigError(f"{what} must be like 0-15, 3,7,9 or 5, not {spec!r}: the range "
                              f"{part.strip()!r} runs backwards")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi - lo >= most:
            raise ConfigError(f"{what} {spec!r} names too many indices (at most {most})")
        out += [i for i in range(lo, hi + 1) if i not in out]
        if len(out) > most:
            raise ConfigError(f"{what} {spec!r} names too many indices (at most {most})")
    return out


SEED_MAX = 2**63 - 1  # torch.manual_seed and torch.Generator.manual_seed overflow above (a traceback)


def check_choices(config) -> None:
    """ConfigError (one line) for the first field whose value is not among its metadata choices,
    or for a `seed` field (every config that draws random numbers has one) torch cannot take.
    Every config's validate() starts here, so the seed rule lives here once."""
    for f in fields(config):
        choices = f.metadata.get("choices")
        if choices and getattr(config, f.name) not in choices:
            raise ConfigError(f"--{f.name.replace('_', '-')} must be one of {', '.join(choices)}, "
                              f"not {getattr(config, f.name)!r}")
        if f.name == "seed":
            seed = getattr(config, f.name)
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
                raise ConfigError(f"--seed must be a whole number from 0 to {SEED_MAX}, not {seed!r}")

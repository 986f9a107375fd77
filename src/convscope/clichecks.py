"""The command line's checks of what argparse cannot see: an option that the chosen method would
silently ignore, an output that would replace one of the run's inputs, and which (sub)command's
--help an error should point at. One-line ConfigErrors, raised before any work."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import fields
from pathlib import Path

DEFAULT_DECODER = "adain-lite"  # fast.models.ARBITRARY_BUILTIN (a test keeps them equal; that module loads torch)


def check_method_options(args, method: str, command_defaults: dict | None = None,
                         labels: dict[str, str] | None = None, only: tuple[str, ...] | None = None) -> None:
    """ConfigError for an option only other `stylize` methods than `method` use (gatys, fast = --model,
    arbitrary) when it was given a value other than its default: it would be silently ignored.
    `command_defaults` are a command's own defaults where they differ (demo's iterations); `labels`
    name the methods in the message, a method left out is not named (stylize-video has no gatys);
    `only` limits the check to these options (stylize-video's --preset is x264's, not the layers')."""
    from .errors import ConfigError
    from .fast.config import FastConfig
    from .style.config import StyleConfig

    shared = {"size", "preserve_color", "device", "precision"}
    users = {f.name: {"gatys"} for f in fields(StyleConfig) if f.name not in shared}
    # --strip (a CLI option, not a config field) draws the optimization's iterations: the one-pass
    # methods have none, and wrote no strip with exit 0.
    users.update(style_blend={"gatys", "arbitrary"}, strength={"fast"}, alpha={"arbitrary"},
                 style_size={"arbitrary"}, decoder={"arbitrary"}, strip={"gatys"})
    defaults = {f.name: f.default for f in (*fields(StyleConfig), *fields(FastConfig))}
    defaults.update(decoder=DEFAULT_DECODER, strip=False, **(command_defaults or {}))
    label = labels or {"gatys": "the gatys method", "fast": "--model", "arbitrary": "--method arbitrary"}
    for name, methods in users.items():
        if not hasattr(args, name) or (only is not None and name not in only):  # not this command's
            continue
        value = getattr(args, name)
        if method not in methods and (tuple(value) if isinstance(value, list) else value) != defaults[name]:
            which = " and ".join(label[m] for m in sorted(methods) if m in label)
            raise ConfigError(f"--{name.replace('_', '-')} applies to {which} only; drop it or change the method")


def refuse_figure_options_without_a_figure(args, config_cls, names: tuple[str, ...]) -> None:
    """ConfigError when no -o is given (--json alone: statistics, no figure) and one of the options
    `names`, which only shape the figure, has a value other than its default in `config_cls`: it
    would be silently ignored (activations --json --cmap magma printed the same JSON, exit 0)."""
    from .errors import ConfigError

    if getattr(args, "output", None) is not None:
        return
    defaults = {f.name: f.default for f in fields(config_cls)}
    for name in names:
        value = getattr(args, name)
        if (tuple(value) if isinstance(value, list) else value) != defaults[name]:
            raise ConfigError(f"--{name.replace('_', '-')} shapes the figure, and --json alone draws none: add "
                              "-o OUT.png or drop it")


def command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the command `args` were parsed for, so an error names its own --help."""
    while True:
        action = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        name = getattr(args, action.dest, None) if action is not None else None
        if name not in (action.choices if action is not None else {}):
            return parser
        parser = action.choices[name]


# The CIFAR-10 models `classify train` builds from scratch, which `layers --net` lists too
# (classify.models.SCRATCH; a test keeps them equal, that module loads torch).
SCRATCH_MODELS = ("simple", "vgg19-bn", "resnet-fast")


def refuse_an_unknown_net(args: argparse.Namespace) -> None:
    """An unknown --net refused at once, before torch loads (options.check_net_name)."""
    from .options import check_net_name

    check_net_name(getattr(args, "net", None), also=SCRATCH_MODELS if getattr(args, "command", None) == "layers" else ())


# Inputs -o may name, by command: stylize's start image (`--init out.png -o out.png` refines an
# output in place; it is read before the run, and the write replaces it only with the finished, or at
# Ctrl-C the best, image, atomically). (train-style's --init is a model to start from: a new model.)
MAY_BE_THE_OUTPUT = {"stylize": ("init",), "demo": ("init",)}
OUTPUTS = ("output", "figure", "mistakes_figure")  # options that name an output file, never an input
# Options that may name a folder whose images the run reads (top-activations, classify predict, a
# data set, a stylize folder run): an output on one of those images would replace an input too.
IMAGE_FOLDERS = ("folder", "inputs", "data", "content")
# The figures a classifier run folder holds (classify/curves.py, checkpoints.py): an output over one
# of them, in a run folder the run reads, replaced the training's own figure.
RUN_FIGURES = ("curves.png", "feature_evolution.png")


def refuse_to_overwrite_an_input(args: argparse.Namespace) -> None:
    """ConfigError when an output (-o, --figure, --mistakes-figure) names one of the run's own inputs:
    a file it would replace (`activations photo.jpg -o photo.jpg`), one of the images in a folder the
    run reads, the folder of images a folder run would write over, or (its .json metadata beside
    it) the config.json of a run folder the run reads (`classify predict RUN x.jpg --figure RUN/config.png`)."""
    for option in OUTPUTS:
        out = getattr(args, option, None)
        if isinstance(out, str) and out:
            _refuse_over_inputs(args, "-o" if option == "output" else f"--{option.replace('_', '-')}",
                                Path(out).expanduser())


def refuse_files_over_inputs(args: argparse.Namespace, flag: str, paths) -> None:
    """refuse_to_overwrite_an_input for the files a run writes beside -o under names of its own
    (activations --layer all-conv: OUT_<layer>.png), `flag` naming them in the message."""
    for path in paths:
        _refuse_over_inputs(args, flag, Path(path))


def _refuse_over_inputs(args: argparse.Namespace, flag: str, out: Path) -> None:
    from .errors import ConfigError
    from .fast.config import VIDEO_FORMATS
    from .imagefiles import WRITABLE_FORMATS, is_image_name, sidecar_path, visible

    sidecar = sidecar_path(out) if out.suffix.lower() in (*WRITABLE_FORMATS, *VIDEO_FORMATS) else None
    for name, v, given in _input_paths(args, skip=MAY_BE_THE_OUTPUT.get(getattr(args, "command", None), ())):
        if _same(given, out):
            raise ConfigError(f"{flag} {out} is one of this run's inputs ({name.replace('_', '-')}); writing "
                              "there would replace it: choose another output name")
        if sidecar is not None and given.is_file() and _same(given, sidecar):  # (texture x.json -o x.png)
            raise ConfigError(f"{flag} {out} would write its metadata ({sidecar.name}) over one of this run's "
                              f"inputs ({name.replace('_', '-')}): choose another output name")
        if not given.is_dir():
            continue
        if sidecar is not None and _same(given / "config.json", sidecar):
            raise ConfigError(f"{flag} {out} would write its metadata ({sidecar.name}) over the config of the "
                              f"run folder {v}: choose another output name")
        if out.name in RUN_FIGURES and (given / "config.json").is_file() and _same(given, out.parent):
            raise ConfigError(f"{flag} {out} would replace the run folder {v}'s own {out.name}: choose another "
                              "output name")
        inside = os.path.relpath(os.path.realpath(out), os.path.realpath(given))
        if name in IMAGE_FOLDERS and out.is_file() and not (given / "config.json").is_file() \
                and not inside.startswith(os.pardir) and all(visible(part) for part in Path(inside).parts) \
                and is_image_name(out.name):
            raise ConfigError(f"{flag} {out} is one of this run's inputs (an image in {v}); writing there "
                              "would replace it: choose another output name")


def _input_paths(args: argparse.Namespace, skip: tuple[str, ...] = ()):
    """(option, value, path) for every non-empty string value of the options that are not outputs
    (nor in `skip`): what a run may read, each one a path or a name."""
    for name, value in vars(args).items():
        if name in OUTPUTS or name in skip:
            continue
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and v:
                yield name, v, Path(v).expanduser()


def _same(a: Path, b: Path) -> bool:
    """Whether `a` and `b` are the same existing file or folder (False when either is missing)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # not a path that exists (a name, a number, a missing file)
        return False


def refuse_frames_over_inputs(args: argparse.Namespace, out: Path, strip: Path | None, frames: bool,
                              flag: str = "--save-every") -> None:
    """ConfigError when an input file would be replaced by what an optimizing run writes beside -o
    OUT.png: its progress strip `strip` (OUT_progress.png), or with `frames` (--save-every) one of its
    frames (OUT_0050.png; OUT_s2_0050.png or OUT_relu2_1_0050.png with a stage or layer tag; `flag` names them)."""
    from .errors import ConfigError

    frame = re.compile(rf"{re.escape(out.stem)}_(?:.+_)?\d{{4,}}{re.escape(out.suffix)}")
    for name, _, given in _input_paths(args):
        if not given.is_file():
            continue
        if strip is not None and _same(given, strip):
            what = f"its progress strip {strip.name}"
        elif frames and frame.fullmatch(given.name) and _same(given.parent, out.parent):
            what = f"one of its {flag} frames"
        else:
            continue
        raise ConfigError(f"{given} is one of this run's inputs ({name.replace('_', '-')}) and {what} would "
                          f"replace it: choose another output name than {out}")


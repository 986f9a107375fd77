"""Command line: parse -> config dataclass -> engine -> write outputs; errors -> exit codes.

Exit codes: 0 success, 2 user error (one line on stderr, no traceback), 130 interrupted (the best
result so far is saved first).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path

from .clichecks import (DEFAULT_DECODER, check_method_options, command_parser, refuse_an_unknown_net,
                        refuse_frames_over_inputs, refuse_to_overwrite_an_input)
from .errors import UserError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


@contextlib.contextmanager
def sigterm_as_interrupt():
    """`kill` (SIGTERM) stops the work inside like Ctrl-C: its cleanup runs (temp files removed,
    child processes ended) instead of Python dying on the spot. Only the main thread may set it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def one_line(text: str) -> str:
    """`text` with its control characters escaped as Python writes them: a file name may hold a
    newline, and the error naming it must stay one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line and exit 2 (argparse's code) without the usage dump."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"convscope: error: {one_line(message)} (see: {self.prog} --help)\n")

    def add_argument(self, *args, **kwargs):
        # Help texts here are plain text, many from config metadata ("at 50% and 75%"); argparse
        # would read their '%' as format specifiers and fail on --help. None uses %(default)s.
        if isinstance(kwargs.get("help"), str) and kwargs["help"] != argparse.SUPPRESS:
            kwargs["help"] = kwargs["help"].replace("%", "%%")
        return super().add_argument(*args, **kwargs)


# ---- options from the config dataclass (one source of truth) -----------------------------------
def _type_of(annotation: str):
    if "tuple[str" in annotation:
        return str, "+"
    if "tuple[float" in annotation:
        return float, "+"
    if "tuple[int" in annotation:
        return int, "+"
    for name, kind in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if annotation.startswith(name):
            return kind, None
    raise TypeError(annotation)


def add_config_options(parser: argparse.ArgumentParser, config_cls, skip=(), defaults=None) -> None:
    """One --option per dataclass field: its type, default and help come from the field."""
    defaults = defaults or {}
    for f in fields(config_cls):
        if f.name in skip:
            continue
        kind, nargs = _type_of(str(f.type))
        default = defaults.get(f.name, f.default if f.default is not MISSING else None)
        flag = "--" + f.name.replace("_", "-")
        shown = " ".join(map(str, default)) if isinstance(default, (tuple, list)) else default  # as typed
        help_text = f.metadata.get("help", "") + (f" (default: {shown})" if default is not None else "")
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                                help=f.metadata.get("help", ""))
        else:
            parser.add_argument(flag, dest=f.name, type=kind, nargs=nargs, default=default,
                                choices=f.metadata.get("choices"), help=help_text,
                                metavar=f.name.upper() if nargs else None)


def config_from_args(args: argparse.Namespace, config_cls):
    values = {f.name: getattr(args, f.name) for f in fields(config_cls) if hasattr(args, f.name)}
    for key, value in values.items():
        if isinstance(value, list):
            values[key] = tuple(value)
    return config_cls(**values)


# ---- commands ---------------------------------------------------------------------------------
def progress_bar(desc: str = "stylize"):
    """A tqdm callback: loss terms, it/s and ETA; one bar per multi-scale stage."""
    from tqdm import tqdm

    state = {"bar": None, "stage": 0}

    def callback(p) -> None:
        if p.stage != state["stage"]:
            if state["bar"] is not None:
                state["bar"].close()
            label = f"{desc} {p.stage}/{p.stages}" if p.stages > 1 else desc
            state["bar"] = tqdm(total=p.iterations, desc=label, unit="it", file=sys.stderr,
                                dynamic_ncols=True, leave=True)
            state["stage"] = p.stage
        bar = state["bar"]
        bar.set_postfix({k: f"{v:.3g}" for k, v in p.terms.items()}, refresh=False)
        bar.update(1)
        if p.iteration == p.iterations:
            bar.close()
            state["bar"] = None

    return callback


class RunOutputs:
    """What an optimizing command does around its engine: progress bar, frames every N iterations
    (OUT<tag>_0050.png ...), removing them if the run fails (an earlier run's frames they replaced come
    back), and on Ctrl-C saving the best image so far with its metadata (exit 130). One place for all.
    `strip`: where --strip (or --save-every) writes OUT_progress.png, checked before the run; else None."""

    def __init__(self, args, out: Path, save_every: int, desc: str, tag: Callable = lambda p: ""):
        from . import images
        from .imagefiles import OutputSet

        self.out, self.every, self.tag = out, save_every, tag
        wants_strip = getattr(args, "strip", False) or save_every
        self.strip = images.check_output_path(f"{out.with_suffix('')}_progress.png", sidecar=False) \
            if wants_strip else None
        refuse_frames_over_inputs(args, out, self.strip, bool(save_every))
        self.bar = progress_bar(desc) if not args.quiet else None
        self.frames = OutputSet()  # a failed run removes its frames, and earlier ones of their names come back

    def callback(self, p) -> None:
        from . import images

        if self.bar is not None:
            self.bar(p)
        if self.every and p.image is not None and p.iteration % self.every == 0:
            frame = Path(f"{self.out.with_suffix('')}{self.tag(p)}_{p.iteration:04d}{self.out.suffix}")
            images.save_image(p.image, self.frames.claim(frame))

    def run(self, engine: Callable, command: str, config, inputs: dict):
        """engine(callback) -> result; None when interrupted (the best image is saved by then).

        Quiet runs without frames pass no callback, so loops need not stop the GPU to report."""
        from . import images
        from .optimize import Interrupted
        from .runinfo import run_metadata

        try:
            result = engine(self.callback if self.bar is not None or self.every else None)
        except Interrupted as stop:
            self.frames.keep()  # the frames so far are this run's, as the best image is
            resolved = stop.config or config
            meta = run_metadata(command, resolved.to_dict(), inputs=inputs, seed=config.seed,
                                interrupted_at={"stage": stop.stage, "iteration": stop.iteration})
            images.save_image(stop.best_image, self.out, meta)
            print(f"\ninterrupted at iteration {stop.iteration} (stage {stop.stage}): best image so far "
                  f"saved to {self.out}", file=sys.stderr)
            return None
        except BaseException:
            self.frames.undo()  # a failed run leaves nothing behind, frames included
            raise
        self.frames.keep()
        return result


def _run_style(args, config, content_path, style_paths, content_img=None, style_imgs=None) -> int:
    """Shared by `stylize` and `demo`: check output, load inputs, run with a bar, save atomically."""
    from .imagefiles import check_output_path, readable_file

    # What needs no torch first, in the order of the run below, so that a wrong path or value is
    # answered at once rather than after PyTorch loads (seconds).
    out = check_output_path(args.output)
    config.validate()
    for path in ([] if content_img else [content_path]) + ([] if style_imgs else list(style_paths)):
        readable_file(path)
    config.blend(len(style_imgs or style_paths))  # fail on mismatched --style-blend before any work

    from . import images
    from .figures import image_strip
    from .runinfo import run_metadata
    from .style.gatys import stylize_images

    content = content_img or images.load_image(content_path)
    styles = style_imgs or [images.load_image(p) for p in style_paths]
    inputs = {"content": str(content_path), "styles": [str(p) for p in style_paths]}
    outputs = RunOutputs(args, out, config.save_every, "stylize",
                         tag=lambda p: f"_s{p.stage}" if p.stages > 1 else "")
    labels = [Path(str(p)).name for p in [content_path, *style_paths]]
    result = outputs.run(lambda callback: stylize_images(content, styles, config, callback, labels=labels),
                         "stylize", config, inputs)
    if result is None:
        return EXIT_INTERRUPTED
    meta = run_metadata("stylize", result.config.to_dict(), inputs=inputs, seed=config.seed,
                        seconds=round(result.seconds, 3), final_losses=result.losses,
                        stage_sizes=result.stage_sizes, iterations_run=len(result.history),
                        cuda_graph=result.graphed)
    images.save_image(result.image, out, meta)
    written = [out]
    if outputs.strip and result.snapshots:
        title = f"{Path(content_path).name} in the style of {', '.join(Path(p).name for p in style_paths)}"
        images.save_image(image_strip(result.snapshots, title), outputs.strip)  # a figure: no sidecar
        written.append(outputs.strip)
    if not args.quiet:
        print_summary(written, outputs.frames.written, result.seconds, result.losses)
    return 0


def print_summary(written: list, frames: list, seconds: float, losses: dict[str, float],
                  frames_are: str = "intermediate image(s)") -> None:
    """One stderr line: what was written, how long it took, the final loss terms."""
    terms = ", ".join(f"{k} {v:.4g}" for k, v in losses.items())
    print(f"wrote {', '.join(map(str, written))}"
          + (f" and {len(frames)} {frames_are}" if frames else "")
          + f" in {seconds:.1f} s ({terms})", file=sys.stderr)


def cmd_stylize(args) -> int:
    from .errors import ConfigError
    from .style.config import StyleConfig

    if args.model is not None and args.method == "arbitrary":
        raise ConfigError("--model is a trained style network; --method arbitrary takes style images "
                          "(and --decoder): use one or the other")
    check_method_options(args, "fast" if args.model is not None else args.method)
    if args.model is not None or args.method == "arbitrary":
        from .commands.fast_style import run_one_pass
        from .fast.config import FastConfig  # torch-free (fast.apply exports the same class)

        if args.size is None:
            args.size = FastConfig.size
        return run_one_pass(args, "fast" if args.model is not None else "arbitrary")
    if not args.styles:
        raise ConfigError("a style image is required: give at least one STYLE (or --model NAME for a "
                          "trained style; see: convscope styles)")
    if args.mask:
        raise ConfigError("--mask works with --method arbitrary")
    if args.size is None:
        args.size = StyleConfig.size
    config = config_from_args(args, StyleConfig)
    return _run_style(args, config, args.content, args.styles)


# Demo: small enough to finish in well under 3 minutes on 2 CPU cores.
DEMO_DEFAULTS = {"size": 256, "iterations": 120}


def cmd_demo(args) -> int:
    from .demo import sample_photo_path, swirl_painting
    from .style.config import StyleConfig

    if args.model is not None:  # the fast path: a built-in feed-forward style, seconds on a CPU
        from .commands.fast_style import run_one_pass
        from .fast.config import FastConfig
        from .fast.models import ARBITRARY_KIND, STYLE_KIND, ModelError, read_header, resolve

        check_method_options(args, "fast", DEMO_DEFAULTS)
        if read_header(resolve(args.model, STYLE_KIND)).get("kind") == ARBITRARY_KIND:
            raise ModelError(f"{args.model} is an arbitrary-style model (it takes a style image); demo --model "
                             "takes a feed-forward style (see: convscope styles), or try: convscope stylize "
                             "PHOTO STYLE --method arbitrary")

        args.content, args.styles, args.mask, args.decoder = str(sample_photo_path()), [], None, None
        args.size = FastConfig.size if args.size is None else args.size
        return run_one_pass(args, "fast")
    check_method_options(args, "gatys", DEMO_DEFAULTS)  # --strength is --model's
    args.size = DEMO_DEFAULTS["size"] if args.size is None else args.size
    config = config_from_args(args, StyleConfig).validate()  # the seed feeds the style drawing
    style = swirl_painting(512, seed=config.seed)
    return _run_style(args, config, sample_photo_path(), ["<built-in swirl painting>"], style_imgs=[style])


def cmd_layers(args) -> int:
    from .nets import layer_table

    rows = layer_table(args.net)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    wide = max(10, *(len(r["name"]) for r in rows))
    kind = max(10, *(len(r["kind"]) for r in rows))
    print(f"{'layer':<{wide}} {'kind':<{kind}} {'channels':>8} {'stride':>6}  aliases")
    for r in rows:
        stride = "-" if r["stride"] is None else r["stride"]  # not spatial (logits) or a global pool
        print(f"{r['name']:<{wide}} {r['kind']:<{kind}} {r['channels']:>8} {stride:>6}  {', '.join(r['aliases'])}")
    return 0


def add_output_options(p: argparse.ArgumentParser, default: str | None = None, required: bool = True) -> None:
    """-o/--output (an image; a .json sidecar goes beside it) and -q/--quiet, for any command."""
    p.add_argument("-o", "--output", required=required and default is None, default=default,
                   help="output image (.png keeps the config in its metadata; a .json sidecar is "
                        "written beside it)" + (f" (default: {default})" if default else ""))
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .options import net_names
    from .fast.config import FastConfig
    from .style.config import StyleConfig

    parser = _Parser(prog="convscope", description="Deep learning on images with CNNs: stylize, "
                     "classify, and see inside.")
    parser.add_argument("--version", action="version", version=f"convscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def common_output(p, default=None):
        add_output_options(p, default)
        p.add_argument("--strip", action="store_true",
                       help="also write OUT_progress.png: first, middle and last iteration side by side")

    p = sub.add_parser("stylize", help="neural style transfer: optimization (gatys), a trained style "
                       "network (--model), or any style in one pass (--method arbitrary)",
                       description="Stylize CONTENT with one or more STYLE images by optimizing the "
                       "output image (--method gatys, the default: L-BFGS), with a feed-forward network "
                       "trained for one style (--model NAME|FILE, no STYLE; see: convscope styles), or "
                       "with any STYLE images in one forward pass (--method arbitrary, AdaIN). "
                       "--model and arbitrary also take a folder of images as CONTENT (-o a folder).")
    p.add_argument("content", help="content image (or, with --model / arbitrary, a folder of images)")
    p.add_argument("styles", nargs="*", metavar="style", help="style image(s); blend with --style-blend")
    common_output(p)
    p.add_argument("--method", choices=("gatys", "arbitrary"), default="gatys",
                   help="gatys: optimize the image (slow, best); arbitrary: AdaIN, one pass (default: gatys)")
    p.add_argument("--model", default=None, help="a feed-forward style: built-in name (see: convscope styles) "
                   "or a file from train-style; stylizes in one pass")
    p.add_argument("--decoder", default=DEFAULT_DECODER, help="arbitrary: the model, built-in name (adain-lite: "
                   "fast on a CPU; adain: VGG19's encoder) or a file from train-arbitrary (default: "
                   f"{DEFAULT_DECODER})")
    p.add_argument("--mask", default=None, metavar="IMAGE", help="arbitrary: a region mask; its grey levels "
                   "pick the style per region (black: first style, white: last)")
    p.add_argument("--size", type=int, default=None, help="long side of the output in pixels (default: 512 "
                   "for gatys; the content's own size for --model and arbitrary)")
    add_config_options(p, StyleConfig, skip=("size",))
    add_config_options(p, FastConfig, skip=("size", "preserve_color", "device", "precision"))
    p.set_defaults(func=cmd_stylize)

    p = sub.add_parser("demo", help="stylize a built-in photo with a built-in style (no files needed)",
                       description="Stylize matplotlib's sample photo with a swirling style drawn in "
                       "code. Takes about a minute or two on a laptop CPU at the defaults.")
    common_output(p, default="demo.png")
    p.add_argument("--model", default=None, help="fast path: stylize with this built-in feed-forward style "
                   "(e.g. starry_night; see: convscope styles) in one pass instead of optimizing")
    p.add_argument("--size", type=int, default=None, help=f"long side of the output in pixels (default: "
                   f"{DEMO_DEFAULTS['size']}; with --model, the photo's own size)")
    add_config_options(p, StyleConfig, defaults=DEMO_DEFAULTS, skip=("size",))
    add_config_options(p, FastConfig, skip=("size", "preserve_color", "device", "precision", "alpha", "style_size"))
    p.set_defaults(func=cmd_demo)

    from .commands import register_all

    register_all(sub)

    p = sub.add_parser("layers", help="list a network's layers and their names",
                       description="List a network's layers: the names every --layer option takes, with "
                       "their kinds, channels and strides.")
    p.add_argument("--net", default="vgg19", help=f"network: {', '.join(net_names())}, or any torchvision "
                   "classifier (resnet18, densenet121, ...; listing needs no weights), a classify model "
                   "built from scratch (simple, vgg19-bn, resnet-fast: the names --snapshot-layer takes), or "
                   "a classify run folder (default: vgg19)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_layers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C while starting up (imports, building the parser)
        print("\nconvscope: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        # `stylize photo.jpg --method arbitrary style.jpg`: argparse gives an optional positional list
        # (STYLE*) its empty match before the options, so style images after options land here.
        if extras and getattr(args, "command", None) == "stylize" and not any(e.startswith("-") for e in extras):
            args.styles = [*args.styles, *extras]
        elif extras:
            command_parser(parser, args).error(f"unrecognized arguments: {' '.join(extras)}")
    except SystemExit as exc:  # --help, --version, or a bad option (already reported in one line)
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USER_ERROR
    try:
        refuse_to_overwrite_an_input(args)
        refuse_an_unknown_net(args)
        with sigterm_as_interrupt():  # `kill` stops a command as Ctrl-C does: what it saves at Ctrl-C, it saves
            return args.func(args)
    except UserError as exc:
        print(f"convscope: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\nconvscope: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Output piped into a reader that stopped early (`... --json | head`): not an error.
        # Point stdout at devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except MemoryError:
        print("convscope: error: out of memory; use a smaller --size", file=sys.stderr)
        return EXIT_USER_ERROR
    except RuntimeError as exc:
        # Out of memory (CPU allocator: "can't allocate memory"; GPUs: "out of memory") is the
        # user's size choice, not a crash.
        message = str(exc).lower()
        if "out of memory" in message or "can't allocate memory" in message:
            on_cpu = "can't allocate memory" in message  # (it said "or --device cpu" there too)
            print("convscope: error: " + ("the CPU ran out of memory; use a smaller --size or --batch-size" if on_cpu
                  else "the GPU ran out of memory; use a smaller --size or --batch-size, or --device cpu"),
                  file=sys.stderr)
            return EXIT_USER_ERROR
        raise


if __name__ == "__main__":
    sys.exit(main())

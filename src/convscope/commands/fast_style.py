"""Feed-forward style transfer commands: `styles`, `train-style`, `train-arbitrary`, `export-onnx`,
and the one-pass paths of `stylize` (`--model NAME|FILE`, `--method arbitrary`)."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

from ..cli import add_config_options, config_from_args


def register(subparsers) -> None:
    from ..fast.config import TrainArbitraryConfig, TrainStyleConfig

    p = subparsers.add_parser("styles", help="list the built-in style models",
                              description="The built-in feed-forward styles (use with stylize --model NAME) "
                              "and the arbitrary-style networks (stylize --method arbitrary --decoder NAME), "
                              "with their cards.")
    p.add_argument("--json", action="store_true", help="machine-readable output, model cards included")
    p.set_defaults(func=run_styles)

    p = subparsers.add_parser(
        "train-style", help="train a feed-forward network for one style (Johnson et al. 2016)",
        description="Train an image transformation network that stylizes any photo in one pass, with "
        "perceptual losses on the original VGG19, on random crops of the images in --content-dir.")
    p.add_argument("style", help="style image (a painting)")
    p.add_argument("--content-dir", required=True, help="folder of photos to train on (subfolders too)")
    _train_outputs(p, "my_style.safetensors")
    add_config_options(p, TrainStyleConfig)
    p.set_defaults(func=run_train_style)

    p = subparsers.add_parser(
        "train-arbitrary", help="train the arbitrary-style (AdaIN) decoder",
        description="Train a decoder for AdaIN (Huang & Belongie 2017): VGG19 up to relu4_1 encodes, "
        "content features take the style's channel statistics, the decoder paints them.")
    p.add_argument("--content-dir", required=True, help="folder of photos (content)")
    p.add_argument("--style-dir", required=True, help="folder of paintings (styles)")
    _train_outputs(p, "decoder.safetensors")
    add_config_options(p, TrainArbitraryConfig)
    p.set_defaults(func=run_train_arbitrary)

    p = subparsers.add_parser(
        "export-onnx", help="export a style model to ONNX",
        description="Export a feed-forward style model (built-in name or file) to ONNX, with dynamic "
        "batch, height and width, verified against PyTorch with onnxruntime when it is installed.")
    p.add_argument("--model", required=True, help="built-in style name (see: convscope styles) or a .safetensors file")
    p.add_argument("-o", "--output", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, from 11 to the newest your torch "
                   "writes (default: 17)")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary")
    p.set_defaults(func=run_export)


def _train_outputs(p, example: str) -> None:
    p.add_argument("-o", "--output", required=True, help=f"model file to write ({example}); a "
                   ".checkpoint.safetensors and a _previews folder go beside it")
    p.add_argument("--resume", action="store_true", help="continue the run whose checkpoint is beside --output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")


# ---- styles ----------------------------------------------------------------------------------
def run_styles(args) -> int:
    import json

    from ..fast.catalog import list_styles

    rows = list_styles()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no built-in style models are installed", file=sys.stderr)
        return 0
    from ..fast.catalog import ARBITRARY_BUILTIN

    wide = max(len(r["name"]) for r in rows)
    for r in rows:
        how = "the default" if r["name"] == ARBITRARY_BUILTIN else f"--decoder {r['name']}"
        kind = f"  (arbitrary: stylize --method arbitrary, {how})" if r["kind"] == "arbitrary" else ""
        print(f"{r['name']:<{wide}}  {r['painting']}{kind}")
        if r["description"]:
            print(f"{'':<{wide}}  {r['description']}")
    return 0


# ---- training --------------------------------------------------------------------------------
class _TrainBar:
    """The training progress bar, made at the first step (so a bad input's error prints alone, not
    between two drawings of an empty bar) and starting at a resumed run's step (so its speed and ETA
    count this process's steps, not the resumed ones as if done in its first second)."""

    def __init__(self, total: int):
        self.total, self.bar = total, None

    def __call__(self, p) -> None:
        if self.bar is None:  # its clock starts now: the first step, done before, is its initial count
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=p.step, desc="train", unit="step", file=sys.stderr,
                            dynamic_ncols=True, postfix={k: f"{v:.3g}" for k, v in p.losses.items()})
            return
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in p.losses.items()}, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _finish_training(args, result) -> int:
    if not args.quiet:
        terms = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items())
        skipped = f"; skipped {result.skipped_images} unreadable image(s)" if result.skipped_images else ""
        print(f"wrote {result.path} after {result.steps} steps in {result.seconds:.0f} s ({terms}){skipped}",
              file=sys.stderr)
    return 0


def _interrupted(args) -> int:
    from ..cli import EXIT_INTERRUPTED
    from ..fast.train import checkpoint_path

    ckpt = checkpoint_path(Path(args.output).expanduser())
    if ckpt.is_file():
        from safetensors import safe_open

        try:  # the header alone: the step the checkpoint holds
            with safe_open(str(ckpt), "pt") as f:
                step = f" (step {json.loads((f.metadata() or {}).get('convscope', '{}')).get('step', '?')})"
        except Exception:  # noqa: BLE001 (a cosmetic detail of the message; the checkpoint is what counts)
            step = ""
        print(f"\ninterrupted: {args.output} and its checkpoint hold the last saved step{step}; continue "
              "with --resume", file=sys.stderr)
    else:  # stopped before the first checkpoint: there is nothing to resume
        print("\ninterrupted before the first checkpoint: nothing saved; run again without --resume "
              "(a smaller --checkpoint-every saves sooner)", file=sys.stderr)
    return EXIT_INTERRUPTED


def _run_training(args, config_cls, train) -> int:
    """Parse the trainer's config, run `train(config, resume, callback)` with a bar, report."""
    from ..fast.train import output_lock

    config = config_from_args(args, config_cls).validate()
    bar = None if args.quiet else _TrainBar(config.steps)
    try:
        with output_lock(args.output):  # before the data and the networks load: a busy output is said at once
            result = train(config, args.resume, bar)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()  # before the message, or the bar draws itself again below it
        return _interrupted(args)
    finally:
        if bar is not None:
            bar.close()
    return _finish_training(args, result)


def run_train_style(args) -> int:
    from ..fast.config import TrainStyleConfig
    from ..fast.train import train_style

    return _run_training(args, TrainStyleConfig, lambda config, resume, callback: train_style(
        args.style, args.content_dir, args.output, config, resume, callback))


def run_train_arbitrary(args) -> int:
    from ..fast.config import TrainArbitraryConfig
    from ..fast.train import train_arbitrary

    return _run_training(args, TrainArbitraryConfig, lambda config, resume, callback: train_arbitrary(
        args.content_dir, args.style_dir, args.output, config, resume, callback))


# ---- export ----------------------------------------------------------------------------------
def run_export(args) -> int:
    from .. import images
    from ..fast.export import export_onnx

    out = images.check_output_file(args.output, "style.onnx")
    result = export_onnx(args.model, out, opset=args.opset)
    if not args.quiet:
        check = (f"; onnxruntime matches PyTorch to {result['max_abs_diff']:.2g}" if result.get("max_abs_diff")
                 is not None else "; onnxruntime not installed, not verified")
        print(f"wrote {out}{check}", file=sys.stderr)
    return 0


# ---- stylize --model / --method arbitrary -----------------------------------------------------
def _inputs(content: str) -> tuple[list[Path], bool]:
    from ..errors import ConfigError
    from ..imagefiles import IMAGE_EXTENSIONS, list_image_files

    p = Path(content).expanduser()
    if p.is_dir():
        files = list_image_files(p, recursive=False)
        if not files:
            nested = " in it; its sub-folders are not read: give one of them" if list_image_files(p, limit=0) else ""
            raise ConfigError(f"no images in {p} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}{nested})")
        return files, True
    return [p], False


def _folder_outputs(files: list[Path], out_dir: Path) -> list[Path]:
    """OUT/<stem>.png for each of `files` (OUT/<stem>_<ext>.png where stems clash: a.jpg and a.png),
    OUT made if missing; all of them checked before any is written."""
    from collections import Counter

    from ..errors import ConfigError, OutputError
    from ..imagefiles import check_output_path

    if out_dir.suffix:
        raise ConfigError(f"CONTENT is a folder, so -o must be a folder too, not {out_dir}")
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"cannot write into {out_dir}: it is a file, not a folder; give a folder for -o")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {out_dir} ({exc.strerror or exc}); "
                          "choose another folder") from None
    clashes = Counter(f.stem.lower() for f in files)
    names = [f.stem if clashes[f.stem.lower()] == 1 else f"{f.stem}_{f.suffix[1:]}" for f in files]
    if len({n.lower() for n in names}) < len(names):
        raise ConfigError(f"images in {files[0].parent} would give outputs of the same name; rename them")
    outputs = [out_dir / f"{n}.png" for n in names]
    for out in outputs:
        check_output_path(out)
    return outputs


def run_one_pass(args, method: str) -> int:
    """`stylize CONTENT --model M` (feed-forward) or `stylize CONTENT STYLE... --method arbitrary`."""
    from ..fast.config import FastConfig

    # What needs no torch first, so a wrong option is answered before PyTorch loads. The images are
    # checked where they are loaded, after the model: an unknown --model is reported first.
    config = config_from_args(args, FastConfig).validate()
    files, folder = _inputs(args.content)
    out_dir = Path(args.output).expanduser()
    made = folder and not out_dir.exists()
    try:
        return _stylize_each(args, method, config, files, folder)
    except BaseException:
        if made:  # a folder this run made stays only if something was written into it
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise


def _stylize_each(args, method: str, config, files: list[Path], folder: bool) -> int:
    """run_one_pass once its options and inputs are known: every output checked, then written."""
    from ..errors import ConfigError, ImageError, UserError
    from ..imagefiles import check_output_path

    if folder:
        outputs = _folder_outputs(files, Path(args.output).expanduser())
    else:
        outputs = [check_output_path(args.output)]
    if method == "fast":
        if args.styles:
            raise ConfigError("--model stylizes with a trained network: give no style images (or use "
                              "--method arbitrary for style images)")
        if args.mask:
            raise ConfigError("--mask works with --method arbitrary")
    else:
        if not args.styles:
            raise ConfigError("--method arbitrary needs at least one style image")
        from ..fast.config import blend_weights

        blend_weights(args.style_blend, len(args.styles), bool(args.mask))  # (said before the model loads)

    from .. import images
    from ..fast.apply import ArbitraryStylizer, FastStylizer, run_config
    from ..runinfo import run_metadata

    if method == "fast":
        stylizer = FastStylizer(args.model, config)
        styles, model_name = [], args.model
    else:
        stylizer = ArbitraryStylizer(args.decoder, config)
        styles, model_name = [images.load_image(s) for s in args.styles], args.decoder
    mask = images.load_image(args.mask) if getattr(args, "mask", None) else None
    saved_config = run_config(stylizer, model_name, args.style_blend)
    bar = None
    if folder and not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(files), desc="stylize", unit="image", file=sys.stderr, dynamic_ncols=True)
    began, skipped, written = time.perf_counter(), [], []
    for src, dst in zip(files, outputs):
        start = time.perf_counter()
        # In a folder, an image that cannot be read, or that the method cannot take (an ImageError
        # from the stylizer: too small), is skipped; any other problem stops the run.
        try:
            content = images.load_image(src)
            labels = [src.name, *(Path(s).name for s in args.styles)]
            result = stylizer(content) if method == "fast" else \
                stylizer(content, styles, args.style_blend, mask, labels=labels)
        except UserError as exc:
            if not folder or not isinstance(exc, ImageError):
                raise
            skipped.append((src, exc))
            if written:  # those before the first output wait for it: if none comes, one error line says it all
                _say_skipped(skipped[-1:], bar)
            continue
        meta = run_metadata("stylize", saved_config,
                            inputs={"content": str(src), "styles": [str(s) for s in args.styles],
                                    **({"mask": str(args.mask)} if mask is not None else {})},
                            seconds=round(time.perf_counter() - start, 3),
                            model_card=stylizer.model.card)
        images.save_image(result, dst, meta)
        if not written:
            _say_skipped(skipped, bar)
        written.append(dst)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if not written:
        raise ImageError(f"none of the {len(files)} image(s) in {args.content} could be stylized; the first: "
                         f"{skipped[0][1]}")
    if not args.quiet:
        where = f"{len(written)} image(s) to {Path(args.output)}" if folder else str(written[0])
        extra = f"; skipped {len(skipped)} unreadable or unusable image(s)" if skipped else ""
        print(f"wrote {where} in {time.perf_counter() - began:.2f} s{extra}", file=sys.stderr)
    return 0


def _say_skipped(skipped: list, bar) -> None:
    """A stderr line for each (image, error) a folder run skipped; below the progress bar, if any."""
    below_bar = "" if bar is None else "\n"
    for src, exc in skipped:
        print(f"{below_bar}skipped {src}: {exc}", file=sys.stderr)

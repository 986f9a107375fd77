"""`convscope stylize-video VIDEO --model NAME|FILE -o OUT.mp4` (or `--method arbitrary --style IMG ...`)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

from ..cli import DEFAULT_DECODER, EXIT_INTERRUPTED, add_config_options, config_from_args

METHODS = ("feed-forward", "arbitrary")


def register(subparsers) -> None:
    from ..fast.config import FastConfig, VideoConfig  # torch-free: --help stays fast

    p = subparsers.add_parser(
        "stylize-video", help="stylize a video frame by frame (a trained style network, or any style image)",
        description="Stylize every frame of VIDEO with a feed-forward style network (--model NAME|FILE; "
        "see: convscope styles) or with style images in one pass each (--method arbitrary --style IMG), "
        "and write an H.264 video at the source's frame rate, with its audio. --temporal reduces flicker.")
    p.add_argument("video", help="input video (any format ffmpeg reads: .mp4, .mov, .mkv, .webm, .avi ...)")
    p.add_argument("-o", "--output", required=True, help="output video: .mp4, .mov or .mkv (H.264); a .json "
                   "sidecar with the run's settings is written beside it")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument("--method", choices=METHODS, default="feed-forward",
                   help="feed-forward: a network trained for one style (--model); arbitrary: AdaIN with "
                   "any --style images (default: feed-forward)")
    p.add_argument("--model", default=None, help="feed-forward: built-in style name (see: convscope styles) "
                   "or a .safetensors file from train-style")
    p.add_argument("--style", dest="styles", nargs="+", default=None, metavar="IMG",
                   help="arbitrary: style image(s)")
    p.add_argument("--style-blend", type=float, nargs="+", default=None, metavar="W",
                   help="arbitrary: one weight per style image (default: equal)")
    p.add_argument("--decoder", default=DEFAULT_DECODER, help="arbitrary: the model, built-in name (adain-lite: "
                   "fast on a CPU; adain: VGG19's encoder) or a file from train-arbitrary (default: "
                   f"{DEFAULT_DECODER})")
    add_config_options(p, VideoConfig)
    add_config_options(p, FastConfig, skip=("size",))  # --size is the video's (frames are sized on decoding)
    p.set_defaults(func=run)


def _check_method(args) -> None:
    from ..clichecks import check_method_options
    from ..errors import ConfigError

    # An option of the other method would be silently ignored: as in `stylize`, that is an error.
    check_method_options(args, "fast" if args.method == "feed-forward" else "arbitrary",
                         labels={"fast": "--model", "arbitrary": "--method arbitrary"},
                         only=("strength", "alpha", "style_size", "decoder"))
    if args.method == "feed-forward":
        if args.model is None:
            raise ConfigError("give --model NAME|FILE (a trained style; see: convscope styles), or "
                              "--method arbitrary --style IMG")
        if args.styles or args.style_blend:
            raise ConfigError("--style and --style-blend go with --method arbitrary; a --model has its style built in")
        return
    if args.model is not None:
        raise ConfigError("--model is a trained style network; --method arbitrary takes --style images "
                          "(and --decoder): use one or the other")
    if not args.styles:
        raise ConfigError("--method arbitrary needs at least one --style image")
    from ..fast.config import blend_weights

    blend_weights(args.style_blend, len(args.styles))  # (said before the model loads)


def _bar(args):
    """A tqdm bar over frames (total estimated from duration x fps) and its callback."""
    from tqdm import tqdm

    state = {"frame": 0, "bar": None}

    def callback(p) -> None:
        state["frame"] = p.frame
        if args.quiet:
            return
        if state["bar"] is None:
            state["bar"] = tqdm(total=p.frames or None, desc="stylize-video", unit="frame", file=sys.stderr,
                                dynamic_ncols=True)
        bar = state["bar"]
        if p.frames and bar.total != p.frames:
            bar.total = p.frames  # the estimate was short
        bar.update(p.frame - bar.n)

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].close()

    return state, callback, close


def run(args) -> int:
    from .. import images
    from ..fast import video
    from ..fast.apply import ArbitraryStylizer, FastConfig, FastStylizer, run_config
    from ..runinfo import device_name, run_metadata

    out = video.check_video_output(args.output)
    _check_method(args)
    vconfig = config_from_args(args, video.VideoConfig).validate()
    fconfig = replace(config_from_args(args, FastConfig), size=0).validate()
    source = video.probe(args.video)  # a bad video fails here, before any model is loaded
    if args.method == "feed-forward":
        stylizer, styles, model = FastStylizer(args.model, fconfig), None, args.model
    else:
        styles = [images.load_image(s) for s in args.styles]
        stylizer, model = ArbitraryStylizer(args.decoder, fconfig), args.decoder
    ran = {k: v for k, v in run_config(stylizer, model).items() if k not in ("method", "model", "style_blend")}
    config = {"method": args.method, "model": model, "video": vconfig.to_dict(), "stylize": ran}
    inputs = {"video": str(args.video), "styles": list(args.styles or []),
              **({"style_blend": list(args.style_blend)} if args.style_blend else {})}
    comment = video.run_comment(run_metadata("stylize-video", config, inputs=inputs))
    state, callback, close = _bar(args)
    try:
        # (cli.main turns `kill` into Ctrl-C: it too ends ffmpeg and removes the temp files)
        result = video.stylize_video(args.video, out, stylizer, vconfig, styles, args.style_blend, callback, comment)
    except KeyboardInterrupt:
        close()  # before the message, so the bar does not overwrite it
        print(f"\ninterrupted at frame {state['frame']}: nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        close()
    meta = run_metadata("stylize-video", config, inputs=inputs, seconds=round(result.seconds, 3),
                        frames=result.frames, size=list(result.size), fps=result.fps, audio=result.audio,
                        source={"size": list(source.size), "fps": float(source.fps), "duration": source.duration},
                        device_name=device_name(stylizer.device), dtype=str(stylizer.dtype).replace("torch.", ""),
                        model_card=stylizer.model.card)
    text = json.dumps(meta, indent=2, default=str) + "\n"
    images.write_atomic(images.sidecar_path(out), lambda f: f.write(text.encode("utf-8")))
    if result.short:
        print(f"warning: only {result.frames} frame(s) could be decoded where the source's duration "
              f"({source.duration:.3g} s at {float(source.fps):.4g} fps) promises about {result.expected}: "
              f"{args.video} may be cut off or damaged; check {out}", file=sys.stderr)
    if result.audio.startswith("dropped"):
        print(f"warning: the source's audio could not be kept ({result.audio[len('dropped: '):]})", file=sys.stderr)
    if not args.quiet:
        w, h = result.size
        audio = {"none": "no audio in the source", "off": "audio off", "copied": "audio copied",
                 "aac": "audio re-encoded to AAC"}.get(result.audio, "audio dropped")
        rate = result.frames / result.seconds if result.seconds > 0 else 0.0
        frames = f"{result.frames} frame" + ("" if result.frames == 1 else "s")
        print(f"wrote {out} ({frames}, {w}x{h}, {result.fps:.4g} fps, {audio}) in "
              f"{result.seconds:.1f} s ({rate:.1f} frames/s)", file=sys.stderr)
    return 0

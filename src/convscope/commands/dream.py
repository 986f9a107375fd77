"""`convscope dream IMAGE -o OUT.png [--layer L] [--channel K | --guide IMAGE]`: DeepDream."""

from __future__ import annotations

import sys
from pathlib import Path

from ..cli import EXIT_INTERRUPTED, add_config_options, add_output_options, config_from_args, print_summary, progress_bar
from ..vis.configs import DreamConfig


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "dream", help="amplify what a layer sees in an image (DeepDream, Mordvintsev et al. 2015)",
        description="Gradient ascent on IMAGE, over several octaves with jitter, so that the patterns a "
        "layer of --net (or one of its channels, or what resembles a guide image there) responds to grow in it.")
    p.add_argument("image", help="image to dream on")
    add_output_options(p)
    p.add_argument("--guide", metavar="IMAGE", default=None,
                   help="guided dream: amplify what at --layer most resembles this image's features")
    add_config_options(p, DreamConfig)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..imagefiles import check_output_path, readable_file

    # What needs no torch first, in the order of the run below, so a wrong path or value is
    # answered at once rather than after PyTorch loads.
    out = check_output_path(args.output)
    config = config_from_args(args, DreamConfig).validate()
    if not config.zoom_frames and (config.zoom != DreamConfig.zoom or config.zoom_steps != DreamConfig.zoom_steps):
        from ..errors import ConfigError  # (they shaped no frames, exit 0)

        raise ConfigError("--zoom and --zoom-steps shape the --zoom-frames sequence: add --zoom-frames N or drop them")
    for path in (args.image, args.guide):
        if path is not None:  # (--guide '' dreamt without a guide, exit 0)
            readable_file(path)
    frame_paths = [Path(f"{out.with_suffix('')}_{n:04d}{out.suffix}") for n in range(1, config.zoom_frames + 1)]
    if frame_paths:  # (checked now: the frames come after the dream is saved, over any old one)
        from ..clichecks import refuse_frames_over_inputs
        from ..errors import OutputError

        refuse_frames_over_inputs(args, out, None, True, "--zoom-frames")
        folder = next((p for p in frame_paths if p.is_dir()), None)
        if folder is not None:
            raise OutputError(f"cannot write the zoom frame {folder}: it is a folder; move it or choose another "
                              "output name")

    from .. import images
    from ..errors import UserError
    from ..imagefiles import OutputSet
    from ..optimize import Interrupted
    from ..runinfo import run_metadata
    from ..vis.dream import Dreamer

    image = images.load_image(args.image)
    guide = images.load_image(args.guide) if args.guide is not None else None
    inputs = {"image": str(args.image), **({"guide": str(args.guide)} if args.guide is not None else {})}
    dreamer = Dreamer(config, guide)
    bar = progress_bar("dream") if not args.quiet else None
    try:
        result = dreamer.run(image, bar)
    except Interrupted as stop:
        meta = run_metadata("dream", dreamer.config.to_dict(), inputs=inputs,
                            interrupted_at={"octave": stop.stage, "step": stop.iteration})
        images.save_image(stop.best_image, out, meta)
        print(f"\ninterrupted in octave {stop.stage} at step {stop.iteration}: the dream so far saved to {out}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    meta = run_metadata("dream", result.config.to_dict(), inputs=inputs, seed=config.seed,
                        seconds=round(result.seconds, 3), objective=result.objective,
                        start_objective=result.start_objective,
                        octave_sizes=[list(s) for s in result.octave_sizes], steps_run=len(result.history))
    images.save_image(result.image, out, meta)

    # Zoom frames come after the main output (they start from it): OUT_0001.png ..., no sidecars.
    frames = OutputSet()
    zoom_bar = progress_bar("zoom") if not args.quiet and config.zoom_frames else None
    try:
        for path, frame in zip(frame_paths, dreamer.zoom(result.image, callback=zoom_bar)):
            images.save_image(frame, frames.claim(path))
    except Interrupted:
        frames.keep()
        print(f"\ninterrupted after {len(frames.written)} zoom frame(s); {out} and those frames are complete",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except UserError:
        frames.undo()  # a failed sequence leaves no partial set behind (the dream itself is done)
        raise
    frames.keep()
    if not args.quiet:
        print_summary([out], frames.written, result.seconds, result.losses, "zoom frame(s)")
    return 0

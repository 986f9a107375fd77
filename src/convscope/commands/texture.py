"""`convscope texture TEXTURE -o OUT.png [--size W H]`: Gatys et al. texture synthesis."""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

from ..cli import (EXIT_INTERRUPTED, add_config_options, add_output_options, config_from_args, print_summary,
                   progress_bar)
from ..errors import UserError


def register(subparsers) -> None:
    from ..vis.texture import TextureConfig

    p = subparsers.add_parser(
        "texture", help="synthesize a new texture like an image (Gatys et al. 2015, Gram matching)",
        description="Synthesize an image of any size whose VGG feature correlations (Gram matrices) "
        "match those of TEXTURE, starting from noise (L-BFGS by default).")
    p.add_argument("texture", help="source texture image")
    add_output_options(p)
    p.add_argument("--strip", action="store_true",
                   help="also write OUT_progress.png: source, first, middle and last iteration side by side")
    # --size is two integers, a shape add_config_options does not build; its default and help still
    # come from the config field (one source of truth).
    size = next(f for f in fields(TextureConfig) if f.name == "size")
    p.add_argument("--size", dest="size", type=int, nargs=2, metavar=("W", "H"), default=size.default,
                   help=f"{size.metadata['help']} (default: {size.default[0]} {size.default[1]})")
    add_config_options(p, TextureConfig, skip=("size",))
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import images
    from ..figures import image_strip
    from ..optimize import Interrupted
    from ..runinfo import run_metadata
    from ..vis.texture import TextureConfig, synthesize

    out = images.check_output_path(args.output)
    config = config_from_args(args, TextureConfig).validate()
    source = images.load_image(args.texture)
    inputs = {"texture": str(args.texture)}
    stem = out.with_suffix("")
    bar = progress_bar("texture") if not args.quiet else None
    frames: list[Path] = []

    def callback(p) -> None:
        if bar is not None:
            bar(p)
        if config.save_every and p.image is not None and p.iteration % config.save_every == 0:
            frame = Path(f"{stem}_{p.iteration:04d}{out.suffix}")
            images.save_image(p.image, frame)
            frames.append(frame)

    try:
        result = synthesize(source, config, callback, label=Path(args.texture).name)
    except UserError:
        for frame in frames:  # a failed run leaves nothing behind, intermediate frames included
            frame.unlink(missing_ok=True)
        raise
    except Interrupted as stop:
        meta = run_metadata("texture", config.to_dict(), inputs=inputs, interrupted_at=stop.iteration)
        images.save_image(stop.best_image, out, meta)
        print(f"\ninterrupted at iteration {stop.iteration}: best image so far saved to {out}", file=sys.stderr)
        return EXIT_INTERRUPTED
    meta = run_metadata("texture", result.config.to_dict(), inputs=inputs, seed=config.seed,
                        seconds=round(result.seconds, 3), final_losses=result.losses,
                        source_size=list(result.source.size), iterations_run=len(result.history),
                        cuda_graph=result.graphed)
    images.save_image(result.image, out, meta)
    written = [out]
    if (args.strip or config.save_every) and result.snapshots:
        strip = Path(f"{stem}_progress.png")
        panels = [(f"source ({result.source.width}x{result.source.height})", result.source), *result.snapshots]
        images.save_image(image_strip(panels, f"texture of {Path(args.texture).name}"), strip)  # no sidecar
        written.append(strip)
    if not args.quiet:
        print_summary(written, frames, result.seconds, result.losses)
    return 0

"""`convscope texture TEXTURE -o OUT.png [--size W H]`: Gatys et al. texture synthesis."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from ..cli import (EXIT_INTERRUPTED, RunOutputs, add_config_options, add_output_options, config_from_args,
                   print_summary)
from ..vis.configs import TextureConfig


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "texture", help="synthesize a new texture like an image (Gatys et al. 2015, Gram matching)",
        description="Synthesize an image of any size whose feature correlations "
        "(Gram matrices; VGG19's by default, any --net's) match those of TEXTURE, starting from noise "
        "(L-BFGS by default).")
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
    from ..imagefiles import check_output_path, readable_file

    # What needs no torch first (see dream.run).
    out = check_output_path(args.output)
    config = config_from_args(args, TextureConfig).validate()
    readable_file(args.texture)

    from .. import images
    from ..figures import image_strip
    from ..runinfo import run_metadata
    from ..vis.texture import synthesize

    source = images.load_image(args.texture)
    inputs = {"texture": str(args.texture)}
    outputs = RunOutputs(args, out, config.save_every, "texture")
    result = outputs.run(lambda callback: synthesize(source, config, callback, label=Path(args.texture).name),
                         "texture", config, inputs)
    if result is None:
        return EXIT_INTERRUPTED
    meta = run_metadata("texture", result.config.to_dict(), inputs=inputs, seed=config.seed,
                        seconds=round(result.seconds, 3), final_losses=result.losses,
                        source_size=list(result.source.size), iterations_run=len(result.history),
                        cuda_graph=result.graphed)
    images.save_image(result.image, out, meta)
    written = [out]
    if outputs.strip and result.snapshots:
        panels = [(f"source ({result.source.width}x{result.source.height})", result.source), *result.snapshots]
        images.save_image(image_strip(panels, f"texture of {Path(args.texture).name}"), outputs.strip)  # no sidecar
        written.append(outputs.strip)
    if not args.quiet:
        print_summary(written, outputs.frames.written, result.seconds, result.losses)
    return 0

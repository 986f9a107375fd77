"""`convscope activations IMAGE [-o grid.png] [--json] [options]`: feature maps of a layer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..cli import add_config_options, add_output_options, config_from_args
from ..clichecks import refuse_figure_options_without_a_figure
from ..errors import ConfigError
from ..vis.configs import ALL_CONV, ActivationsConfig


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "activations", help="feature maps of a layer as a grid, most active channels first",
        description="Run IMAGE through the network once and draw the feature maps of --layer, "
        f"most active channels first, next to the input. --layer {ALL_CONV} writes one figure per "
        "block as OUT_<layer>.png. --json prints per-channel statistics on stdout.")
    p.add_argument("image", help="input image")
    # -o is optional here: `--json` alone is a complete, file-free use (scripting).
    add_output_options(p, required=False)
    p.add_argument("--json", action="store_true",
                   help="print the layer shape and per-channel mean/max/positive fraction as JSON on stdout")
    add_config_options(p, ActivationsConfig)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..imagefiles import check_output_path, readable_file

    # What needs no torch first (see dream.run).
    config = config_from_args(args, ActivationsConfig)
    if args.output is None and not args.json:
        raise ConfigError("nothing to write: give -o OUT.png for the figure, or --json for the statistics")
    refuse_figure_options_without_a_figure(args, ActivationsConfig, ("max_channels", "cmap", "shared_scale"))
    out = check_output_path(args.output) if args.output is not None else None
    config.validate()
    readable_file(args.image)

    from .. import images
    from ..imagefiles import OutputSet
    from ..vis.activations import activations, figure_metadata, layer_figure, stats_dict

    image = images.load_image(args.image)
    result = activations(image, config)

    if out is not None:
        # Render every figure before writing any, so a failure leaves no partial set of files.
        per_layer = config.layer == ALL_CONV
        jobs = []
        paths = [Path(f"{out.with_suffix('')}_{la.canonical}{out.suffix}") if per_layer else out
                 for la in result.layers]
        if per_layer:  # names known only now: one on an input or a folder lost inputs or old figures
            from ..clichecks import refuse_files_over_inputs

            refuse_files_over_inputs(args, "--layer all-conv's figure", paths)
            for path in paths:
                images.check_output_path(path)
        for la, path in zip(result.layers, paths):
            jobs.append((path, layer_figure(result, la), figure_metadata(result, la, input=str(args.image))))
        saved = OutputSet()  # a failed set leaves none of its files, and the earlier ones come back
        try:
            for path, figure, meta in jobs:
                images.save_image(figure, saved.claim(path, sidecar=True), meta)
        except BaseException:
            saved.undo()
            raise
        saved.keep()
        if not args.quiet:
            print(f"wrote {', '.join(str(path) for path, _, _ in jobs)} ({result.seconds:.2f} s forward pass)",
                  file=sys.stderr)
    if args.json:
        print(json.dumps(stats_dict(result), indent=2))
    return 0

"""`convscope featureviz --net NET --layer LAYER --channels 0-15 -o sheet.png`: what channels respond to.

Activation maximization (see convscope.vis.featureviz): one image per channel (or per class with
--class), optimized together as one batch, drawn as a contact sheet titled with the net and layer,
each panel labelled with its index and the activation it reached. The sidecar .json holds the
config as run and every panel's start and final activation.
"""

from __future__ import annotations

import sys
from dataclasses import fields

from ..cli import (EXIT_INTERRUPTED, add_config_options, add_output_options, config_from_args, print_summary,
                   progress_bar)
from ..vis.configs import FeatureVizConfig

COMMAND = "featureviz"


def add_class_option(p, config_cls) -> None:
    """--class (a Python keyword, so the config field is target_class): help from the field."""
    f = next(f for f in fields(config_cls) if f.name == "target_class")
    p.add_argument("--class", dest="target_class", metavar="CLASS", default=f.default, help=f.metadata["help"])


def register(subparsers) -> None:
    p = subparsers.add_parser(
        COMMAND, help="what a layer's channels respond to: activation maximization, one panel per channel",
        description="Optimize one image per channel of --layer (or per class logit with --class) so that "
        "the channel's mean activation (its centre neuron with --neuron) is as large as possible, under "
        "random jitter, zoom and rotation and a 1/f Fourier parameterization with decorrelated colour "
        "(Olah et al. 2017, Feature Visualization). Writes a contact sheet of the images.")
    add_output_options(p)
    # What to visualize first (net, layer, channels, class), then how (the shared render options).
    what = ("net", "layer", "channels", "neuron")
    add_config_options(p, FeatureVizConfig, skip=[f.name for f in fields(FeatureVizConfig) if f.name not in what])
    add_class_option(p, FeatureVizConfig)
    add_config_options(p, FeatureVizConfig, skip=(*what, "target_class"))
    p.set_defaults(func=run)


def run(args) -> int:
    from ..imagefiles import check_output_path

    # What needs no torch first (see dream.run).
    out = check_output_path(args.output)
    config = config_from_args(args, FeatureVizConfig).validate()

    from .. import images
    from ..optimize import Interrupted
    from ..vis.featureviz import FeatureVisualizer
    from ..vis.featureviz_sheet import sheet, sheet_metadata

    viz = FeatureVisualizer(config)  # loads the net; layer, channels and classes are checked here
    bar = progress_bar(COMMAND) if not args.quiet else None
    try:
        result = viz.run(bar)
    except Interrupted as stop:
        partial = stop.partial
        images.save_image(sheet(partial), out,
                          sheet_metadata(partial, interrupted_at={"stage": stop.stage, "step": stop.iteration}))
        print(f"\ninterrupted at step {stop.iteration} of batch {stop.stage}: the sheet so far "
              f"({len(partial.targets)} panel(s)) saved to {out}", file=sys.stderr)
        return EXIT_INTERRUPTED
    images.save_image(sheet(result), out, sheet_metadata(result))
    if not args.quiet:
        print_summary([out], [], result.seconds, result.losses)
    return 0

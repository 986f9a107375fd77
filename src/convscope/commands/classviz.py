"""`convscope classviz --class 543 -o out.png`: what a class looks like to a classifier.

The class logit maximized under a natural-image prior (see convscope.vis.featureviz: the featureviz
engine with ClassVizConfig's stronger defaults). Writes the picture itself; the sidecar .json holds
the class, the logit and probability reached and the net's top-5 for the picture.
"""

from __future__ import annotations

import sys

from ..cli import EXIT_INTERRUPTED, RunOutputs, add_config_options, add_output_options, config_from_args, print_summary
from ..vis.configs import ClassVizConfig
from .featureviz import add_class_option

COMMAND = "classviz"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        COMMAND, help="a picture of what a class looks like to a classifier (class score maximization)",
        description="Optimize an image so that the classifier's logit for --class is as large as possible, "
        "under a natural-image prior: a smooth Fourier parameterization with decorrelated colour, blur, "
        "and random jitter, zoom and rotation (Simonyan et al. 2014; Olah et al. 2017). --class takes an "
        "index or an ImageNet name ('dumbbell', 'military uniform').")
    add_output_options(p)
    add_class_option(p, ClassVizConfig)
    add_config_options(p, ClassVizConfig, skip=("target_class",))
    p.set_defaults(func=run)


def run(args) -> int:
    from ..imagefiles import check_output_path

    # What needs no torch first (see dream.run).
    out = check_output_path(args.output)
    config = config_from_args(args, ClassVizConfig).validate()

    from .. import images
    from ..vis.featureviz import FeatureVisualizer
    from ..vis.featureviz_sheet import picture_metadata

    viz = FeatureVisualizer(config)  # loads the net; the class is checked here
    outputs = RunOutputs(args, out, 0, COMMAND)
    result = outputs.run(viz.run, COMMAND, viz.config, {"class": str(config.target_class)})
    if result is None:
        return EXIT_INTERRUPTED
    images.save_image(result.image(0), out, picture_metadata(result, viz.net.classes))
    if not args.quiet:
        print_summary([out], [], result.seconds,
                      {"logit": result.final[0], "probability": result.probabilities[0]})
        print(f"class {result.labels[0]}", file=sys.stderr)
    return 0

"""`convscope explain IMAGE -o OUT.png [--net NET] [--target CLASS]`: why the net said what it said."""

from __future__ import annotations

import json
import sys

from ..cli import add_config_options, add_output_options, config_from_args
from ..clichecks import refuse_figure_options_without_a_figure
from ..errors import ConfigError
from ..vis.configs import ExplainConfig


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "explain", help="which pixels made the prediction: Grad-CAM, guided backprop, deconvnet side by side",
        description="Classify IMAGE, print the top-5 classes, and draw why the net chose the --target class "
        "(default: its top-1): the Grad-CAM heat map over the image (Selvaraju et al. 2017), guided "
        "backpropagation (Springenberg et al. 2015), guided Grad-CAM and the deconvnet projection (Zeiler & "
        "Fergus 2014). On a net without a classifier (vgg19) it explains a channel of --layer instead.")
    p.add_argument("image", help="input image")
    # -o is optional: `--json` alone is a complete, file-free use (scripting).
    add_output_options(p, required=False)
    p.add_argument("--json", action="store_true",
                   help="print the target and the top-5 as JSON on stdout instead of a table")
    add_config_options(p, ExplainConfig)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..imagefiles import check_output_path, readable_file

    # What needs no torch first (see dream.run).
    config = config_from_args(args, ExplainConfig)
    if args.output is None and not args.json:
        raise ConfigError("nothing to write: give -o OUT.png for the figure, or --json for the predictions")
    refuse_figure_options_without_a_figure(args, ExplainConfig, ("rules", "cmap", "alpha"))
    out = check_output_path(args.output) if args.output is not None else None
    config.validate()
    readable_file(args.image)

    from .. import images
    from ..runinfo import run_metadata
    from ..vis.explain import explain, explain_figure

    image = images.load_image(args.image)
    result = explain(image, config)
    summary = result.summary()
    if out is not None:
        meta = run_metadata("explain", result.config.to_dict(), input=str(args.image),
                            seconds=round(result.seconds, 3), **summary)
        images.save_image(explain_figure(result), out, meta)
    if args.json:
        print(json.dumps({**summary, "output": str(out) if out is not None else None}, indent=2))
    else:
        print_table(result)
    if out is not None and not args.quiet:
        print(f"wrote {out} ({result.seconds:.2f} s)", file=sys.stderr)
    return 0


def print_table(result) -> None:
    """The target, then the top-5 as a small table on stdout."""
    if result.kind == "class":
        print(f"target: class {result.target.channel} {result.target_name!r}, "
              f"p = {result.target_score:.4f}; Grad-CAM at {result.cam_layer}")
        head, fmt = "probability", lambda v: f"{100 * v:10.2f}%"
    else:
        print(f"target: {result.target_name} (mean activation {result.target_score:.4g}); "
              f"Grad-CAM at {result.cam_layer}")
        head, fmt = "mean activation", lambda v: f"{v:11.4g}"
    width = max(len(p.name) for p in result.top)
    print(f"{'rank':>4}  {'index':>5}  {'name':<{width}}  {head}")
    for rank, p in enumerate(result.top, 1):
        print(f"{rank:>4}  {p.index:>5}  {p.name:<{width}}  {fmt(p.score)}")

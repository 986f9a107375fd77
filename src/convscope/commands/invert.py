"""`convscope invert IMAGE --layer LAYER -o OUT.png`: reconstruct an image from a layer's representation.

Mahendran & Vedaldi 2015 (see convscope.vis.invert). One layer writes the reconstruction; `--layers
L1 L2 ...` writes one figure: the original and one reconstruction per layer, side by side, each
labelled with its layer and error. The normalized representation error reached is printed on
stdout (one line) and stored in the sidecar.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..cli import EXIT_INTERRUPTED, RunOutputs, add_config_options, add_output_options, config_from_args
from ..vis.configs import InvertConfig

COMMAND = "invert"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        COMMAND, help="reconstruct an image from one layer's representation (Mahendran & Vedaldi)",
        description="Starting from noise, find an image whose representation at --layer matches the "
        "input's, under an alpha-norm and a TV^beta natural-image prior. Prints the normalized "
        "representation error ||phi(x) - phi0||^2 / ||phi0||^2 reached.")
    p.add_argument("image", help="image whose representation is inverted")
    add_output_options(p)
    add_config_options(p, InvertConfig)
    p.set_defaults(func=run)


def _error_line(results) -> str:
    return "normalized representation error: " + ", ".join(f"{r.layer} {r.error:.4g}" for r in results)


def run(args) -> int:
    from ..imagefiles import check_output_path, readable_file

    # What needs no torch first (see dream.run).
    config = config_from_args(args, InvertConfig).validate()
    out = check_output_path(args.output)
    readable_file(args.image)

    from .. import images
    from ..optimize import Interrupted
    from ..vis.invert import invert, results_metadata, strip_figure

    original = images.load_image(args.image)
    inputs = {"image": str(args.image)}
    layers = config.layer_list()
    outputs = RunOutputs(args, out, config.save_every, COMMAND,
                         tag=lambda p: f"_{layers[p.stage - 1]}" if config.layers is not None else "")
    title = f"{Path(str(args.image)).name}: reconstructions from {config.net}"

    def engine(callback):
        try:
            return invert(original, config, callback)
        except Interrupted as stop:
            if config.layers is not None:  # -o is the strip: of the layers so far, this one as it stands
                stop.best_image = images.pil_to_tensor(strip_figure(stop.results, title + " (interrupted)"))
            raise

    results = outputs.run(engine, COMMAND, config, inputs)
    if results is None:
        return EXIT_INTERRUPTED
    meta = results_metadata(results, inputs)
    if config.layers is None:  # --layer: the reconstruction itself; --layers: always the strip figure
        images.save_image(results[0].image, out, meta)
    else:
        images.save_image(strip_figure(results, title), out, meta)
    if not args.quiet:
        frames = outputs.frames.written
        print(f"wrote {out}" + (f" and {len(frames)} intermediate image(s)" if frames else "")
              + f" in {sum(r.seconds for r in results):.1f} s", file=sys.stderr)
    print(_error_line(results))
    return 0

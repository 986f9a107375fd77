"""`convscope top-activations FOLDER -o sheet.png [--layer L] [--channels 0-7]`: the images of a
folder that excite each channel most, with their deconvnet projections (Zeiler & Fergus 2014)."""

from __future__ import annotations

import sys

from ..cli import EXIT_INTERRUPTED, add_config_options, add_output_options, config_from_args
from ..vis.configs import TopActConfig


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "top-activations", help="the images of a folder that excite each channel most, with their "
        "deconvnet projections (Zeiler & Fergus 2014)",
        description="Stream every image of FOLDER (subfolders too) through the network, keep for each "
        "channel of --channels the --top images where it fires most, and draw them (by default the "
        "patch at the unit's receptive field) next to the projection of that activation back "
        "to the pixels (--rule; by default the deconvnet's where a max pooling runs before the layer, else "
        "guided backprop's). Unreadable images are skipped with a warning.")
    p.add_argument("folder", help="folder of images (jpg, png, webp, bmp, tiff, gif; searched recursively)")
    add_output_options(p)
    add_config_options(p, TopActConfig)
    p.set_defaults(func=run)


def progress_bar():
    """A tqdm callback for TopActProgress: one bar per stage (scan, then projections)."""
    from tqdm import tqdm

    state = {"bar": None, "stage": None}

    def callback(p) -> None:
        if p.stage != state["stage"]:
            if state["bar"] is not None:
                state["bar"].close()
            unit = "img" if p.stage == "scan" else "proj"
            state["bar"] = tqdm(total=p.total, desc=p.stage, unit=unit, file=sys.stderr,
                                dynamic_ncols=True, leave=True)
            state["stage"] = p.stage
        bar = state["bar"]
        if p.skipped:
            bar.set_postfix({"skipped": p.skipped}, refresh=False)
        bar.update(p.done - bar.n)
        if p.done >= p.total:
            bar.close()
            state["bar"] = state["stage"] = None

    return callback


def run(args) -> int:
    from ..imagefiles import check_output_path, find_images

    # What needs no torch first (see dream.run).
    out = check_output_path(args.output)
    config = config_from_args(args, TopActConfig).validate()
    paths = find_images(args.folder)              # an empty folder fails here, before the net loads

    from .. import images
    from ..runinfo import run_metadata
    from ..vis.imagefolder import relative_name
    from ..vis.topact import TopActivations
    from ..vis.topact_sheet import metadata_dict, sheet_figure

    engine = TopActivations(config)               # layer, channels and size checked here
    result = engine.run(paths, args.folder, progress_bar() if not args.quiet else None)
    if result.skipped:
        names = ", ".join(relative_name(p, result.folder) for p in result.skipped[:3])
        more = f" and {len(result.skipped) - 3} more" if len(result.skipped) > 3 else ""
        print(f"convscope: warning: skipped {len(result.skipped)} unreadable image(s): {names}{more}",
              file=sys.stderr)
    meta = run_metadata("top-activations", result.config.to_dict(), **metadata_dict(result))
    images.save_image(sheet_figure(result), out, meta)
    total = sum(result.seconds.values())
    if result.interrupted:
        print(f"\ninterrupted after {result.scanned} of {result.found} images: the top activations of those "
              f"saved to {out}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if result.projected is not None:
        done, found = result.projected
        print(f"\ninterrupted during the projections ({done} of {found} drawn): the sheet so far saved to {out}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    if not args.quiet:
        kept = result.scanned - len(result.skipped)
        print(f"wrote {out} in {total:.1f} s ({kept} images scanned in {result.seconds['scan']:.1f} s, "
              f"{sum(len(w) for w in result.winners.values())} projections)", file=sys.stderr)
    return 0

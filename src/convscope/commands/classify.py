"""`convscope classify train|evaluate|predict`: image classifiers from scratch or on pretrained backbones."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from ..classify.config import CACHE_DIR_HELP, TTA_MODES
from ..cli import add_config_options
from ..errors import ConfigError
from ._classify_lrfind import register_lr_find
from ._classify_train import run_train


def register(subparsers) -> None:
    from ..classify.config import TrainConfig

    p = subparsers.add_parser("classify", help="train, evaluate and use image classifiers",
                              description="Image classification: train a CNN from scratch or on a pretrained "
                              "backbone, evaluate it, predict images.")
    sub = p.add_subparsers(dest="classify_command", metavar="{train,lr-find,evaluate,predict,export}")
    sub.required = True

    t = sub.add_parser("train", help="train a classifier into a run folder",
                       description="Train --model on --data. Every epoch writes a checkpoint, metrics.csv, "
                       "TensorBoard scalars and curves.png into the run folder; --resume continues a run "
                       "stopped at any point and ends where an uninterrupted run would.")
    t.add_argument("-o", "--output", required=True, metavar="RUN_DIR",
                   help="run folder: new or empty, or a run to continue with --resume")
    t.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last checkpoint")
    t.add_argument("--cache-dir", default=None,
                   help=f"where decoded images and bottleneck features are cached ({CACHE_DIR_HELP})")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_config_options(t, TrainConfig)
    t.set_defaults(func=run_train)

    e = sub.add_parser("evaluate", help="accuracy, per-class accuracy, top-k and a confusion matrix",
                       description="Evaluate a trained run on its validation data (or --data).")
    e.add_argument("run_dir", help="a run folder written by classify train")
    e.add_argument("--data", default=None,
                   help="data set to evaluate on (default: the run's own validation split): a folder of class "
                        "sub-folders is evaluated whole (it may hold only some of the run's classes); one with "
                        "train/ inside, on all of its val/ (or test/) split likewise; the run's own folder, on "
                        "its hold-out")
    e.add_argument("--data-root", default=None, help="where CIFAR-10 is")
    e.add_argument("--tta", nargs="?", const="flip", default="none", choices=TTA_MODES, metavar="MODE",
                   help="test-time augmentation: flip (the default when given alone) averages the image and its "
                        "mirror; shift adds both moved by 1 px diagonally each way; none (default)")
    e.add_argument("-o", "--output", default=None, help="confusion-matrix figure (PNG)")
    e.add_argument("--mistakes", type=int, default=None, metavar="N",
                   help="list the N misclassified images the run was most sure of (lowest probability of "
                        "their actual class): mislabelled images and confusable classes show up here "
                        f"(default: none; {MISTAKES_SHOWN} with --mistakes-figure)")
    e.add_argument("--mistakes-figure", default=None, metavar="OUT.png",
                   help="draw those images (at most 64), each with the Grad-CAM of the class it was taken for: "
                        "where the net saw it")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.add_argument("--device", default="auto", help="device: auto, cpu, cuda, cuda:N, mps (default: auto)")
    e.set_defaults(func=run_evaluate)

    r = sub.add_parser("predict", help="class probabilities for images or folders",
                       description="Predict images with a trained run, or with --net efficientnet_lite0 "
                       "(ImageNet's 1000 classes, no training needed).")
    r.add_argument("inputs", nargs="+", metavar="RUN_DIR|IMAGE|FOLDER",
                   help="a run folder then images/folders; or only images/folders with --net")
    r.add_argument("--net", default=None, help="predict with a pretrained net instead of a run (efficientnet_lite0)")
    r.add_argument("--top", type=int, default=5, help="classes listed per image (default: 5)")
    form = r.add_mutually_exclusive_group()  # both used to print JSON alone, silently
    form.add_argument("--json", action="store_true", help="print JSON instead of a table")
    form.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    r.add_argument("--figure", metavar="OUT.png", default=None,
                   help="write the image / actual vs predicted / probability bars view")
    r.add_argument("--device", default="auto", help="device: auto, cpu, cuda, cuda:N, mps (default: auto)")
    r.set_defaults(func=run_predict)

    _register_export(sub)
    register_lr_find(sub)


MISTAKES_SHOWN, MISTAKES_DRAWN = 16, 64  # --mistakes-figure alone lists and draws 16; it draws at most 64


def run_evaluate(args) -> int:
    from ..classify.run import RunDir
    from ..errors import ConfigError
    from ..imagefiles import check_output_path

    if args.output:
        check_output_path(args.output)  # before the evaluation, not after its report
    if args.mistakes is not None and args.mistakes < 0:
        raise ConfigError(f"--mistakes must be a whole number at least 0, not {args.mistakes}")
    if args.mistakes == 0 and args.mistakes_figure:
        raise ConfigError("--mistakes 0 leaves --mistakes-figure nothing to draw: drop --mistakes (16 are drawn) "
                          "or give how many")
    if args.mistakes_figure:
        check_output_path(args.mistakes_figure)
        if args.output and Path(args.output).expanduser().resolve() == Path(args.mistakes_figure).expanduser().resolve():
            raise ConfigError("-o and --mistakes-figure name the same file; give each figure its own")
    shown = args.mistakes if args.mistakes is not None else MISTAKES_SHOWN if args.mistakes_figure else 0
    RunDir(args.run_dir).info()  # not a run: said before PyTorch loads (load_run reads it again)

    from ..classify.data import load_validation
    from ..classify.folders import decode_size, folder_classes, plain_class_folder, same_folder
    from ..classify.predict import evaluate, load_run
    from ..devices import resolve_device

    device = resolve_device(args.device)
    loaded = load_run(args.run_dir, device)
    recorded = RunDir(args.run_dir).info().get("run", {})  # what training saw: its folder and counts
    own = _run_data(recorded, loaded.config.data)
    spec = args.data or own
    folder = spec != "cifar10"
    if args.data_root is not None:
        from ..classify.config import check_data_root

        check_data_root(spec, args.data_root)
    if folder and not args.data:  # the run's own data, which the CLI's check of --data did not see
        from argparse import Namespace

        from ..clichecks import refuse_to_overwrite_an_input

        refuse_to_overwrite_an_input(Namespace(command=args.command, data=spec, output=args.output,
                                               mistakes_figure=args.mistakes_figure))
    size = decode_size(spec, loaded.input_size, loaded.config.model) if folder else None
    test_dir = _test_set(spec) if folder and args.data and not same_folder(spec, own) else None
    if test_dir is not None:
        # Another folder: a test set, all of it (not a val_split hold-out of it), with some or all of
        # the run's classes: its class sub-folders, or those of its test/ or val/ split.
        from ..classify.data import load_images

        val = load_images(str(test_dir), classes=loaded.classes, size=size)
        val_kind = "all images" if plain_class_folder(spec) else f"all images of its {test_dir.name}/ split"
        _warn_if_a_copy_of_the_training_data(recorded, spec, val)
        if val.skipped:
            print(f"warning: skipped {len(val.skipped)} unreadable image(s), e.g. {val.skipped[0]}", file=sys.stderr)
    else:
        _check_classes(folder_classes(spec) if folder else None, loaded.classes)  # (before decoding both splits)
        val, val_kind, splits = load_validation(spec, root=args.data_root or loaded.config.data_root, size=size,
                                                val_split=loaded.config.val_split, seed=loaded.config.seed)
        if splits is not None and same_folder(spec, own):
            _warn_if_the_hold_out_moved(recorded, splits)
    _check_classes(val.classes, loaded.classes)
    ev = evaluate(loaded, val.images, val.labels, device, tta=args.tta, mistakes=shown)
    mistakes = [_mistake_record(m, val, loaded.classes) for m in ev.mistakes]
    if args.json:
        print(json.dumps({"accuracy": ev.accuracy, "balanced_accuracy": ev.balanced_accuracy, "top_k": ev.top_k,
                          "per_class": ev.per_class,
                          "count": ev.count, "tta": ev.tta, "epoch": loaded.epoch,
                          "confusion": ev.confusion.tolist(), "most_confused": ev.most_confused(loaded.classes),
                          **({"mistakes": mistakes} if shown else {})}, indent=2))
    else:
        print(f"accuracy {ev.accuracy:.4f} on {ev.count} images ({val_kind}), mean per class "
              f"{ev.balanced_accuracy:.4f}" + "".join(f", top-{k} {v:.4f}" for k, v in ev.top_k.items() if k > 1)
              + (f"; weights of epoch {loaded.epoch}" if loaded.epoch else ""))
        for name, acc in ev.per_class.items():
            print(f"  {name:<20} {acc:.4f}")
        confused = ev.most_confused(loaded.classes)
        if confused:
            print("most confused (actual -> predicted): "
                  + ", ".join(f"{a} -> {b} {k}x" for a, b, k in confused))
        if shown:
            wrong = int(ev.count - ev.confusion.diagonal().sum())
            print(f"the {len(mistakes)} most confident of {wrong} mistake(s):" if mistakes else "no mistakes")
            for r in mistakes:
                print(f"  {r['image']}: actual {r['actual']} ({_percent(r['p_actual'])}), "
                      f"predicted {r['predicted']} ({_percent(r['p_predicted'])})")
    if args.output:
        _confusion_figure(ev, loaded.classes, args.output)
    if args.mistakes_figure:
        from ..classify.predict import mistake_maps

        drawn = ev.mistakes[:MISTAKES_DRAWN]
        _mistakes_figure(val.images, drawn, mistakes, mistake_maps(loaded, val.images, drawn, device),
                         args.mistakes_figure)
    return 0


def _check_classes(data: list[str] | None, run: list[str]) -> None:
    """ConfigError unless the data's classes (None: not known yet) are the run's."""
    if data is not None and data != run:
        def names(c):
            return ", ".join(c[:5]) + (", ..." if len(c) > 5 else "")
        raise ConfigError(f"the data's classes ({names(data)}) differ from the run's ({names(run)})")


def _test_set(spec: str) -> Path | None:
    """The folder of class sub-folders to evaluate whole in the data folder `spec`: itself, or its
    test/ or val/ split; None for a train/ folder alone (a hold-out of it is drawn instead)."""
    from ..classify.folders import layout

    root = Path(spec).expanduser()
    if not root.is_dir():
        return None
    train_dir, val_dir, _ = layout(root)
    return root if train_dir == root else val_dir


def _percent(p: float) -> str:
    return "<0.1%" if p < 0.0005 else f"{p:.1%}"  # (0.0% read as impossible)


def _mistake_record(m, val, classes) -> dict:
    """A mistake as the report shows it: the image's file (or its index in the split), class names."""
    image = val.paths[m.index] if val.paths is not None else f"image #{m.index}"
    return {"image": image, "index": m.index, "actual": classes[m.actual], "predicted": classes[m.predicted],
            "p_actual": m.p_actual, "p_predicted": m.p_predicted}


def _mistakes_figure(images_u8, mistakes, records, maps, out) -> None:
    """A grid of the mistakes, each with the Grad-CAM of its predicted class over it."""
    from PIL import Image

    from ..figures import render
    from ..images import save_image
    from ..vis.explain import heat_overlay

    cols = max(1, min(4, len(mistakes)))
    rows = max(1, -(-len(mistakes) // cols))

    def draw(fig) -> None:
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        if not mistakes:
            axes[0, 0].set_title("no mistakes", fontsize=10)
        for ax, m, r, cam in zip(axes.flat, mistakes, records, maps):
            image = Image.fromarray(images_u8[m.index].permute(1, 2, 0).numpy())
            ax.imshow(heat_overlay(image, cam, alpha=0.4).clip(0, 1))  # (float rounding past 1)
            name = "/".join(Path(r["image"]).parts[-2:])  # class folder and file: "cat/0042.jpg"
            ax.set_title(f"{name}\nactual: {r['actual']}\npredicted: {r['predicted']} {r['p_predicted']:.0%}",
                         fontsize=8, color="red")

    save_image(render(draw, (2.6 * cols, 3.2 * rows)), out, {"mistakes": records[:len(mistakes)]})


def _warn_if_a_copy_of_the_training_data(meta: dict, folder: str, val) -> None:
    """A test folder with the run's classes and exactly as many images as it trained and validated on
    is likely a copy of its data (moved, or on another machine): scored whole, its training images
    count too. Say so. `meta`: the run's record of its training (config.json's "run")."""
    total = (meta.get("train_images") or 0) + (meta.get("val_images") or 0)
    if total and len(val) + len(val.skipped) == total + meta.get("skipped", 0) and \
            sorted(set(val.labels.tolist())) == list(range(len(val.classes))):
        print(f"warning: {folder} has the run's classes and as many images as it trained and validated on "
              f"({total}): if it is a copy of the run's data, its training images are scored too; give the run's "
              "own folder (no --data) to score its hold-out", file=sys.stderr)


def _warn_if_the_hold_out_moved(meta: dict, splits) -> None:
    """A hold-out split is drawn again from the folder as it is now: if images came or went since
    training, it is another split, and may hold images the run trained on. Say so (counts recorded
    at training against now)."""
    if not splits.val_kind.startswith("split:"):
        return
    then = (meta.get("train_images"), meta.get("val_images"))
    now = (len(splits.train), len(splits.val))
    if None not in then and then != now:
        print(f"warning: the data folder changed since training ({sum(then)} images then, {sum(now)} now): the "
              "hold-out drawn from it now is not the one the run was validated on and may hold images it "
              "trained on; evaluate on a separate folder with --data", file=sys.stderr)


def _run_data(meta: dict, data: str) -> str:
    """The run's data as it can be found from here: the absolute folder the run recorded (config.json
    keeps --data as typed, relative to where training ran), else `data`."""
    source = meta.get("data")
    if data != "cifar10" and isinstance(source, str) and Path(source).is_absolute() and Path(source).is_dir():
        return source
    return data


def _confusion_figure(ev, classes, out) -> None:
    from ..figures import render
    from ..images import check_output_path, save_image

    path = check_output_path(out)

    def draw(fig) -> None:
        ax = fig.subplots()
        c = ev.confusion.float()
        norm = c / c.sum(1, keepdim=True).clamp(min=1)
        ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        if len(classes) <= 20:
            for i in range(len(classes)):
                for j in range(len(classes)):
                    ax.text(j, i, int(c[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
        ax.set(xlabel="predicted", ylabel="actual", title=f"confusion matrix: accuracy {ev.accuracy:.4f}")

    size = max(5, 0.45 * len(classes) + 2)
    save_image(render(draw, (size, size)), path, {"accuracy": ev.accuracy, "per_class": ev.per_class})


def run_predict(args) -> int:
    from ..classify.run import RunDir
    from ..errors import ConfigError
    from ..imagefiles import check_output_path, image_paths

    # What needs no torch first, so a wrong path is answered before PyTorch loads (the run folder,
    # the images named; the net, the device and the run's weights are checked after).
    if args.top < 1:
        raise ConfigError(f"--top must be at least 1, not {args.top}")
    figure = check_output_path(args.figure) if args.figure else None
    inputs = list(args.inputs)
    run_dir = None if args.net else inputs.pop(0)
    if run_dir is not None:
        RunDir(run_dir).info()  # load_run reads it again
        if not inputs:
            raise ConfigError("give images or folders to predict after the run folder")
    for item in inputs:  # (its curves.png was predicted as an image, with --net the run ignored)
        if _is_run(item):
            raise ConfigError(f"{item} is a run folder, not images: " + (
                f"drop --net {args.net} to predict with it" if args.net else "give one run folder, first"))
    paths = image_paths(inputs)

    from ..classify.predict import as_net, load_run, predict_images
    from ..devices import resolve_device

    device = resolve_device(args.device)
    if run_dir is None:
        from ..nets import get_net

        net = get_net(args.net, device=device)
        if net.num_classes is None or net.classes is None:
            raise ConfigError(f"net {args.net!r} has no named classifier head; use efficientnet_lite0")
        model, classes, size = net, net.classes, net.input_size
    else:
        loaded = load_run(run_dir, device)
        model, classes, size = as_net(loaded), loaded.classes, loaded.input_size
    skipped: list[tuple[str, str]] = []
    preds = predict_images(model, classes, paths, size, device, top=args.top, skipped=skipped)
    if skipped and not preds:
        raise ConfigError(f"none of the {len(paths)} image(s) could be read; the first: {skipped[0][1]}")
    if skipped:
        print(f"warning: skipped {len(skipped)} unreadable image(s) of {len(paths)}; the first: {skipped[0][1]}",
              file=sys.stderr)
    if args.json:
        print(json.dumps([{"path": p.path, "actual": p.actual, "top": [{"class": c, "probability": round(v, 6)}
                                                                        for c, v in p.top]} for p in preds], indent=2))
    elif args.csv:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["path", "actual", "rank", "class", "probability"])
        for p in preds:
            for rank, (c, v) in enumerate(p.top, 1):
                w.writerow([p.path, p.actual or "", rank, c, f"{v:.6f}"])
        print(buf.getvalue(), end="")
    else:
        for p in preds:
            mark = "" if p.actual is None else (" (correct)" if p.top[0][0] == p.actual else f" (actual: {p.actual})")
            print(f"{p.path}: " + ", ".join(f"{c} {v:.1%}" for c, v in p.top) + mark)
    if figure is not None:
        _predict_figure(preds, figure)
    return 0


def _is_run(path: str) -> bool:
    from ..classify.run import RunDir, RunError

    try:
        return Path(path).is_dir() and bool(RunDir(path).info())
    except RunError:
        return False


def _predict_figure(preds, out) -> None:
    from ..figures import render
    from ..images import save_image

    shown = preds[:8]

    def draw(fig) -> None:
        axes = fig.subplots(len(shown), 2, squeeze=False, gridspec_kw={"width_ratios": [1, 1.6]})
        for (ax_img, ax_bar), p in zip(axes, shown):
            ax_img.imshow(p.image)
            ax_img.axis("off")
            predicted = p.top[0][0]
            colour = "black" if p.actual is None else ("green" if p.actual == predicted else "red")
            ax_img.set_title(f"{Path(p.path).name}\n" + (f"actual: {p.actual}\n" if p.actual else "")
                             + f"predicted: {predicted}", fontsize=9, color=colour)  # which file is which
            names = [c for c, _ in p.top][::-1]
            ax_bar.barh(names, [v for _, v in p.top][::-1],
                        color=["tab:green" if c == p.actual else "tab:blue" for c in names])
            ax_bar.set_xlim(0, 1)
            ax_bar.set_xlabel("probability", fontsize=8)
            ax_bar.tick_params(labelsize=8)

    save_image(render(draw, (8, 2.6 * len(shown))), out,
               {"predictions": [{"path": p.path, "top": p.top, "actual": p.actual} for p in shown]})


def _register_export(sub) -> None:
    from ..classify.config import ExportConfig  # torch-free (classify.export loads torch)

    x = sub.add_parser("export", help="write a trained run as an ONNX model",
                       description="Export a trained run to ONNX: input 'image' (float32 RGB in [0, 1], "
                       "[batch, 3, S, S] at the run's input size; the model normalizes itself), outputs "
                       "'logits' and 'probabilities'; class names and input size in the model's metadata. "
                       "With onnxruntime installed the model is checked against PyTorch before it is written.")
    x.add_argument("run_dir", help="a run folder written by classify train")
    x.add_argument("-o", "--output", required=True, metavar="MODEL.onnx", help="the ONNX file to write")
    add_config_options(x, ExportConfig)
    x.set_defaults(func=run_export)


def run_export(args) -> int:
    from ..classify.config import ExportConfig
    from ..classify.run import RunDir
    from ..cli import config_from_args

    config = config_from_args(args, ExportConfig).validate()
    RunDir(args.run_dir).info()        # cheap checks first: a run, a writable .onnx path, onnx installed

    from ..classify.export import check_output, export, require_onnx
    from ..classify.predict import load_run

    check_output(args.output)
    require_onnx()
    loaded = load_run(args.run_dir, "cpu")
    result = export(loaded, args.output, config.opset, config.dynamic_batch, config.probabilities,
                    config.verify, config.exporter)
    v = result.verification
    sizes = ("batches of " + " and ".join(map(str, v.batches)) if v is not None and len(set(v.batches)) > 1
             else f"{len(v.batches)} batches of {v.batches[0]}" if v is not None else "")  # (a fixed batch: 1, twice)
    check = (f"verified with {v.runtime} on {sizes}: max |difference| "
             f"{v.max_abs_diff:.2g} (logits up to {v.logit_scale:.3g}, tolerance {v.tolerance:.2g})"
             if v is not None else result.unverified_reason)
    shape = ", ".join(map(str, result.input_shape))
    print(f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB, opset {result.opset}, {result.exporter} exporter, "
          f"{result.seconds:.1f} s): input image [{shape}] RGB in [0, 1], outputs {', '.join(result.outputs)} "
          f"over {len(result.classes)} classes; {check}", file=sys.stderr)
    return 0

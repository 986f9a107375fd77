"""The recipe of convscope's built-in style models: run it to retrain every one of them.

    python scripts/train_builtin_models.py --data ../shared/data [--only starry_night ...] [--device cuda]
        [--steps N] [--set style_weight=10 ...] [--out DIR] [--note TEXT]

Content: photos-256.tar (1,000 ImageNet photos, 256x256); styles: starry_night.jpg and
the_scream.jpg from nst-inputs/, two Impressionism paintings from paintings-256.tar, and all 500
paintings-256 images for the arbitrary-style models (adain: a decoder for VGG19; adain-lite: a
distilled encoder and a narrower decoder, one file). The archives are unpacked into a scratch
folder (never into the repo); each model is trained with the engine the CLI uses
(`convscope train-style` / `train-arbitrary`), then stored as fp16 safetensors under
src/convscope/fast/models/ with its model card (data, steps, losses, time, machine) in the header.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from convscope.fast.config import TrainArbitraryConfig, TrainStyleConfig  # noqa: E402
from convscope.fast.models import ARBITRARY_KIND, STYLE_KIND, load_model, save_model  # noqa: E402
from convscope.fast.train import train_arbitrary, train_style  # noqa: E402

OUT = ROOT / "src" / "convscope" / "fast" / "models"

# name: (style image, centre-crop fraction, card)
STYLES = {
    "starry_night": ("nst-inputs/starry_night.jpg", 1.0, {
        "painting": "Vincent van Gogh, The Starry Night (1889)",
        "description": "swirling blue night sky with bold yellow brush strokes"}),
    "the_scream": ("nst-inputs/the_scream.jpg", 1.0, {
        "painting": "Edvard Munch, The Scream (1893)",
        "description": "wavy orange and blue bands, expressionist strokes"}),
    "bathers": ("paintings/Impressionism-0179.jpg", 1.0, {
        "painting": "a late-19th-century painting of bathers (paintings-256 Impressionism-0179, WikiArt sample)",
        "description": "blue-green figures in blocky Cezanne-like patches of colour"}),
    "water_lilies": ("paintings/Impressionism-0181.jpg", 0.7, {
        "painting": "a water-lily pond in the manner of Monet (paintings-256 Impressionism-0181, WikiArt sample)",
        "description": "soft dabs of green, blue and pink, impressionist light"}),
}
# The shipped styles were trained on one H100 (2026-11-22) in two stages.
# Stage 1: ten trainings at once (the four styles at style weights 10 and 20, starry_night and
# the_scream also at 30), each run's steps sized so all ended within ~12 minutes (STYLE_STEPS);
# 256 px crops, batch 8, style Gram targets at 384 px, TV weight 1, from random weights.
# Stage 2 (STYLE_CONTINUE): starry_night, the_scream and bathers continued from their stage-1 model
# (--init) with a fresh Adam and schedule, seven trainings at once next to three CIFAR-10 runs; the
# runs were planned for `steps` and stopped at the time limit, so the shipped files are the
# checkpoints at `shipped_step` (run to `steps`, a retraining goes a little further).
# Each style ships the weight with the lowest style loss whose content loss stayed at or below the
# optimization's on a test photo (bench/fast.py's scorer at 384 px); water_lilies gained nothing in
# stage 2 (5.46x against 5.44x) and ships its stage-1 model.
STYLE_RECIPE = dict(size=256, batch_size=8, steps=2800, lr=1e-3, style_size=384, style_weight=10.0, tv_weight=1.0,
                    preview_every=1400, checkpoint_every=280)
STYLE_STEPS = {"starry_night": 2800, "the_scream": 2900, "bathers": 2700, "water_lilies": 2800}
STYLE_WEIGHTS = {"starry_night": 20.0}
STYLE_CONTINUE = {"starry_night": dict(style_weight=20.0, steps=4500, shipped_step=3600),
                  "the_scream": dict(style_weight=15.0, steps=4300, shipped_step=3870),
                  "bathers": dict(style_weight=15.0, steps=4500, shipped_step=3600)}
# Stage 3 (STYLE_STAGE3, 2026-11-23): continued again from stage 2's model, seven trainings at once
# next to three CIFAR-10 runs on one H100, planned for `steps` and stopped at the time limit. Each
# style was also grown (--init into 8 residual blocks, or a 64-channel last stage; the new parts
# start as the identity): the_scream's 8 blocks lowered the style loss by 11% against the same
# continuation without growth (14 of 14 photos), starry_night's did not (its plain continuation
# was best), so the_scream ships with 8 residual blocks.
STYLE_STAGE3 = {"starry_night": dict(style_weight=20.0, steps=6100, checkpoint_every=610, shipped_step=4270),
                "the_scream": dict(style_weight=15.0, steps=5200, checkpoint_every=520, residual_blocks=8,
                                   shipped_step=4160)}
ARBITRARY_RECIPE = dict(size=256, batch_size=8, steps=1800, lr=5e-4, style_weight=10.0, preview_every=500,
                        checkpoint_every=100)
# AdaIN-lite: the encoder is distilled from VGG19 while the decoder learns, so it needs more steps.
# Its decoder is a quarter of the paper's widths (the half-width one alone costs ~0.1 s at 512 px on
# a 2-core CPU), so it starts from random weights (--set init=FILE continues a trained one). The shipped
# model ran on one H100 shared with six style trainings and three CIFAR-10 runs (2026-11-22), planned
# for 4400 steps and stopped at the time limit: the file is its checkpoint at step 3520.
LITE_RECIPE = dict(size=256, batch_size=8, steps=4400, lr=5e-4, style_weight=10.0, mimic_weight=100.0,
                   encoder="lite", encoder_widths=(16, 32, 64, 128), widths=(64, 32, 16),
                   preview_every=1000, checkpoint_every=250)
ARBITRARY = {  # name: (recipe, card)
    "adain": (ARBITRARY_RECIPE, {
        "painting": "any style image (AdaIN, Huang & Belongie 2017)",
        "description": "arbitrary style transfer in one pass: VGG19 encoder to relu4_1, decoder trained here"}),
    "adain-lite": (LITE_RECIPE, {
        "painting": "any style image (AdaIN with a distilled encoder)",
        "description": "arbitrary style transfer in one pass, fast on a CPU: a small encoder trained to imitate "
                       "VGG19's relu4_1, and its decoder, trained here together"}),
}


def machine() -> str:
    import torch

    from convscope.devices import cpu_model_name

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{cpu_model_name()} CPU, {torch.get_num_threads()} threads"


def unpack(data: Path, scratch: Path, name: str) -> Path:
    folder = scratch / name.split("-")[0]
    if not folder.is_dir():
        with tarfile.open(data / name) as tar:
            tar.extractall(scratch, filter="data")
    return folder


def style_image(path: Path, crop: float) -> Image.Image:
    img = Image.open(path).convert("RGB")
    if crop < 1.0:
        w, h = img.size
        cw, ch = round(w * crop), round(h * crop)
        img = img.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
    return img


def progress(name: str):
    def callback(p):
        if p.step % 50 == 0 or p.step == p.steps:
            terms = " ".join(f"{k} {v:.4g}" for k, v in p.losses.items())
            print(f"{name} step {p.step}/{p.steps} {p.seconds:.0f} s  {terms}", flush=True)
    return callback


def finish(kind: str, work: Path, name: str, card: dict, out_dir: Path = OUT, note: str | None = None) -> None:
    model = load_model(str(work), kind)
    meta = dict(model.meta)
    meta["card"] = {**meta.get("card", {}), **card, "steps": meta.get("steps"),
                    "seconds": meta.get("seconds"), "final_losses": meta.get("final_losses"),
                    "machine": card.get("machine") or machine(), "date": time.strftime("%Y-%m-%d"),
                    "recipe": "scripts/train_builtin_models.py", **({"note": note} if note else {})}
    for key in ("kind", "arch"):
        meta.pop(key, None)
    if meta["card"].get("style_image") == "(image)":  # written by an earlier version of train_style
        del meta["card"]["style_image"]
    path = save_model(out_dir / f"{name}.safetensors", kind, model.net, meta, half=True)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)", flush=True)


def parse_sets(pairs: list[str]) -> dict:
    """`--set key=value` recipe overrides; tuples as comma lists (widths=32,64,128)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set takes KEY=VALUE, not {pair!r}")
        if "," in value:
            out[key] = tuple(int(v) for v in value.split(","))
        else:
            for parse in (int, float, str):  # init=starry_night stays a string
                try:
                    out[key] = parse(value)
                    break
                except ValueError:
                    continue
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder with the archives")
    ap.add_argument("--work", default=str(ROOT / ".scratch" / "builtin"), help="scratch folder (git-ignored)")
    ap.add_argument("--only", nargs="*", default=None, help=f"names to train: {', '.join([*STYLES, *ARBITRARY])}")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=None, help="override the steps (quick checks)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override recipe options")
    ap.add_argument("--out", default=str(OUT), help="where the fp16 model files go (default: the package's)")
    ap.add_argument("--note", default=None, help="a note for the model cards (e.g. how the machine was shared)")
    ap.add_argument("--first-stage-only", action="store_true", help="skip the styles' later stages "
                    "(STYLE_CONTINUE, STYLE_STAGE3)")
    ap.add_argument("--cards-only", action="store_true", help="rewrite the shipped files and cards from the "
                    "trained models in --work without training")
    args = ap.parse_args()
    data, work = Path(args.data), Path(args.work)
    overrides = parse_sets(args.set)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    photos = unpack(data, work, "photos-256.tar")
    paintings = unpack(data, work, "paintings-256.tar")
    names = args.only or [*STYLES, *ARBITRARY]
    unknown = [n for n in names if n not in STYLES and n not in ARBITRARY]
    if unknown:
        raise SystemExit(f"unknown name(s) {', '.join(unknown)}; choose from {', '.join([*STYLES, *ARBITRARY])}")
    for name in names:
        out = work / f"{name}.safetensors"
        if args.cards_only:
            kind = ARBITRARY_KIND if name in ARBITRARY else STYLE_KIND
            later = [work / f"{name}-stage{k}.safetensors" for k in (3, 2)]
            out = next((f for f in later if f.exists()), out) if not args.first_stage_only else out
            card = load_model(str(out), kind).card
            shipped = out_dir / f"{name}.safetensors"
            if shipped.exists():  # rewritten elsewhere (e.g. on a CPU): keep the machine it trained on
                card["machine"] = load_model(str(shipped), kind).card.get("machine")
            finish(kind, out, name, card, out_dir, args.note)
            continue
        resume = (work / f"{name}.checkpoint.safetensors").exists()
        if name in ARBITRARY:
            base, card = ARBITRARY[name]
            recipe = {**base, **overrides, **({"steps": args.steps} if args.steps else {}), "device": args.device}
            card = {**card, "data": "content: photos-256 (1,000 ImageNet photos); styles: paintings-256 (500 "
                                    f"WikiArt paintings, 37 movements); {recipe['size']} px random crops"}
            train_arbitrary(photos, paintings, out, TrainArbitraryConfig(**recipe), resume, progress(name), card)
            finish(ARBITRARY_KIND, out, name, card, out_dir, args.note)
            continue
        source, crop, card = STYLES[name]
        recipe = {**STYLE_RECIPE, "steps": STYLE_STEPS.get(name, STYLE_RECIPE["steps"]),
                  "style_weight": STYLE_WEIGHTS.get(name, STYLE_RECIPE["style_weight"]), **overrides,
                  **({"steps": args.steps} if args.steps else {}), "device": args.device}
        card = {**card, "data": f"content: photos-256 (1,000 ImageNet photos), {recipe['size']} px random crops; "
                                f"style: {source} at {recipe['style_size']} px",
                "losses": "content relu3_1, style Gram relu1_1..relu5_1 (relative), TV"}
        src = data / source if (data / source).exists() else work / source
        train_style(style_image(src, crop), photos, out, TrainStyleConfig(**recipe), resume, progress(name), card)
        for stage, later in ((2, STYLE_CONTINUE), (3, STYLE_STAGE3)):
            if name not in later or args.first_stage_only:
                continue
            sets = {"checkpoint_every": 90, **{k: v for k, v in later[name].items() if k != "shipped_step"}}
            recipe = {**recipe, **sets, **({"steps": args.steps} if args.steps else {}), "init": str(out),
                      "preview_every": sets["steps"] // 2}
            out = work / f"{name}-stage{stage}.safetensors"
            resume = (work / f"{name}-stage{stage}.checkpoint.safetensors").exists()
            train_style(style_image(src, crop), photos, out, TrainStyleConfig(**recipe), resume, progress(name), card)
        finish(STYLE_KIND, out, name, card, out_dir, args.note)


if __name__ == "__main__":
    main()

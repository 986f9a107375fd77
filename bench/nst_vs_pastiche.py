"""Gatys style transfer, convscope vs the `pastiche` CLI, side by side on the same inputs.

Both tools run as subprocesses of their own CLIs with the same size, iteration count, optimizer
(L-BFGS, fixed unit steps, no line search) and layers (content relu4_2, style relu1_1..relu5_1),
and each tool keeps its own default loss weights. Wall time is measured end to end (process start,
imports, weight loading, optimization, writing the PNG): what a user waits for. Both output PNGs
are then scored by ONE evaluator built from convscope's engine pieces, under convscope's objective
and under pastiche's (re-implemented here from its documented formula), so quality is compared on
the same scale. Run from anywhere:

    python bench/nst_vs_pastiche.py --size 256 --iterations 50 --device cpu --repeats 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"
sys.path.insert(0, str(SRC))  # use this checkout's convscope, installed or not

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from convscope import images  # noqa: E402
from convscope.losses import gram, tv_loss  # noqa: E402
from convscope.nets import get_net  # noqa: E402
from convscope.style.config import StyleConfig  # noqa: E402
from convscope.style.gatys import StyleObjective  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "nst-inputs"
CONTENT_LAYER = "relu4_2"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONVSCOPE_STYLE_WEIGHT = StyleConfig().style_weight   # 30.0: convscope's default
CONVSCOPE_TV_WEIGHT = StyleConfig().tv_weight         # 1.0: also part of convscope's default objective


def commands(tool: str, a, out: Path) -> list[str]:
    py = sys.executable
    if tool == "convscope":
        return [py, "-m", "convscope.cli", "stylize", str(a.content), str(a.style), "-o", str(out),
                "--size", str(a.size), "--iterations", str(a.iterations), "--optimizer", "lbfgs",
                "--device", a.device, "--preset", "classic", "-q"]
    # pastiche's --size is the long side too; its style image is resized to the content's pixel
    # count (not its long side), its weights and TV (0) stay at its defaults.
    return [py, "-m", "pastiche", "--device", a.device, "--num-steps", str(a.iterations),
            "--size", str(a.size), "--content", str(a.content), "--styles", str(a.style),
            "--output", str(out), "--optimizer", "lbfgs", "--content-layers", "block4_relu2",
            "--style-layers", "block1_relu1", "block2_relu1", "block3_relu1", "block4_relu1",
            "block5_relu1", "--no-verbose"]


def run_timed(tool: str, a, out: Path) -> float:
    """Wall seconds of one CLI run; exits with the tool's stderr tail if it fails."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    if out.exists():
        out.unlink()  # so a stale file can never pass for this run's output
    cmd = commands(tool, a, out)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0 or not out.is_file():
        tail = "\n".join((proc.stderr or proc.stdout or "(no output)").strip().splitlines()[-20:])
        sys.exit(f"error: {tool} failed (exit {proc.returncode}"
                 f"{', no output file' if proc.returncode == 0 else ''}).\ncommand: {' '.join(cmd)}\n"
                 f"stderr tail:\n{tail}")
    return seconds


class Evaluator:
    """Scores an output image under both objectives against targets built at the output's size."""

    def __init__(self, content_path: Path, style_path: Path, device: torch.device):
        self.device = device
        self.content = images.load_image(content_path)
        self.style = images.load_image(style_path)
        self.net = get_net("vgg19", device=device)
        # Score in full float32 on every device (cuDNN would otherwise use TF32 convolutions).
        torch.backends.cudnn.allow_tf32 = False

    def _targets(self, w: int, h: int):
        """Content at the output's exact size, style at the output's long side: same for both tools."""
        c_img = images.resize_long_side(self.content, max(w, h))
        if c_img.size != (w, h):  # rounding of the short side may differ by a pixel between tools
            c_img = self.content.resize((w, h), Image.Resampling.LANCZOS)
        c = images.pil_to_tensor(c_img, device=self.device)
        s = images.pil_to_tensor(images.resize_long_side(self.style, max(w, h)), device=self.device)
        # pastiche sizes its style to the content's pixel count, not its long side: its objective
        # is scored against a style target sized its way (same target for both outputs).
        s_area = images.pil_to_tensor(images.resize_to_pixels(self.style, w * h), device=self.device)
        return c, s, s_area

    @torch.no_grad()
    def score(self, output_path: Path) -> dict[str, float]:
        out_img = images.load_image(output_path)
        x = images.pil_to_tensor(out_img, device=self.device)
        c, s, s_area = self._targets(*out_img.size)
        # convscope's objective, unit weights (the "relative" normalization is its default).
        cfg = StyleConfig(preset="classic", content_weight=1.0, style_weight=1.0, tv_weight=0.0)
        terms = StyleObjective(self.net, c, [s], [1.0], cfg)(x)
        content, style = float(terms["content"]), float(terms["style"])
        tv = float(tv_loss(x, cfg.tv_kind))
        return {"width": out_img.width, "height": out_img.height, "content": content, "style": style,
                "convscope_loss": content + CONVSCOPE_STYLE_WEIGHT * style,
                "tv": tv, "pastiche_loss": self.pastiche_loss(x, c, s_area),
                "pastiche_loss_long_side_style": self.pastiche_loss(x, c, s)}

    def pastiche_loss(self, x, c, s) -> float:
        """pastiche 1.6's default objective (its PasticheArtist._calc_loss), written from its formula:
        0.01 * MSE(relu4_2) + sum over relu1_1..relu5_1 of 10/C² * MSE(Gram/HW), one style at weight
        1, TV weight 0. Its inputs are BGR 0..255 minus the Caffe means: our vgg19 does that itself."""
        layers = (CONTENT_LAYER,) + STYLE_LAYERS
        fx, fc, fs = (self.net.features(t, layers) for t in (x, c, s))
        loss = 0.01 * F.mse_loss(fx[CONTENT_LAYER], fc[CONTENT_LAYER])
        for n in STYLE_LAYERS:
            channels = fx[n].shape[1]
            loss = loss + 10.0 / channels ** 2 * F.mse_loss(gram(fx[n], "hw"), gram(fs[n], "hw"))
        return float(loss)


def machine_info(device: str) -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or platform.machine()
    from importlib.metadata import version
    import convscope
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "convscope": convscope.__version__, "pastiche": version("pastiche"),
            "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def winner(cs: float, pa: float) -> str:
    if cs == pa:
        return "tie"
    return f"convscope (lower by {100 * (1 - cs / pa):.1f}%)" if cs < pa else \
        f"pastiche (lower by {100 * (1 - pa / cs):.1f}%)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--content", type=Path, default=DATA / "tubingen.jpg")
    p.add_argument("--style", type=Path, default=DATA / "starry_night.jpg")
    p.add_argument("--size", type=int, default=256, help="long side of the output, px")
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--repeats", type=int, default=1, help="runs per tool; order alternates")
    p.add_argument("--out", type=Path, help="folder for the outputs (default: a new temp folder)")
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    a = p.parse_args(argv)
    for name in ("content", "style"):
        path = getattr(a, name)
        if not path.is_file():
            sys.exit(f"error: {name} image {path} not found; pass --{name} PATH "
                     f"(the defaults live in {DATA})")
        setattr(a, name, path.resolve())
    if a.repeats < 1 or a.iterations < 1 or a.size < 32:
        sys.exit("error: --repeats and --iterations must be >= 1, --size >= 32")
    if a.device == "auto":
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    out = (a.out or Path(tempfile.mkdtemp(prefix="nst_vs_pastiche_"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    paths = {t: out / f"out_{t}.png" for t in ("convscope", "pastiche")}

    # Other work on the machine skews wall times: say so rather than print quietly wrong ratios.
    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        print(f"warning: 1-min load average is {load_before:.2f} before the runs; timings may be noisy",
              file=sys.stderr)
    # Alternate who goes first so caches, turbo clocks and page cache favour neither tool.
    times: dict[str, list[float]] = {"convscope": [], "pastiche": []}
    for r in range(a.repeats):
        order = ("convscope", "pastiche") if r % 2 == 0 else ("pastiche", "convscope")
        for tool in order:
            times[tool].append(run_timed(tool, a, paths[tool]))
            print(f"repeat {r + 1}/{a.repeats}: {tool} {times[tool][-1]:.2f} s", file=sys.stderr)
    median = {t: statistics.median(v) for t, v in times.items()}
    ratio = median["pastiche"] / median["convscope"]

    # Score the last repeat's outputs (both tools start from the content image: deterministic).
    ev = Evaluator(a.content, a.style, torch.device(a.device))
    scores = {t: ev.score(path) for t, path in paths.items()}
    cs, pa = scores["convscope"], scores["pastiche"]
    win_cs = winner(cs["convscope_loss"], pa["convscope_loss"])
    win_pa = winner(cs["pastiche_loss"], pa["pastiche_loss"])
    win_pa_long = winner(cs["pastiche_loss_long_side_style"], pa["pastiche_loss_long_side_style"])
    passed = ratio >= 1.3 and cs["convscope_loss"] <= pa["convscope_loss"] and \
        cs["pastiche_loss"] <= pa["pastiche_loss"]

    print(f"\n### Style transfer: convscope vs pastiche ({a.content.name} + {a.style.name}, "
          f"{cs['width']}x{cs['height']} px, {a.iterations} L-BFGS iterations, {a.device}, "
          f"median of {a.repeats})\n")
    print("| tool | wall s | runs (s) | content | style | content + 30·style | tv | pastiche objective |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for t in ("convscope", "pastiche"):
        s = scores[t]
        print(f"| {t} | {median[t]:.2f} | {', '.join(f'{v:.2f}' for v in times[t])} | {s['content']:.4g} | "
              f"{s['style']:.4g} | {s['convscope_loss']:.4g} | {s['tv']:.3g} | {s['pastiche_loss']:.4g} |")
    print(f"\n- wall-time ratio pastiche / convscope: **{ratio:.2f}x** (>1: convscope faster)")
    print(f"- convscope's objective, content + {CONVSCOPE_STYLE_WEIGHT:g}·style ({CONVSCOPE_STYLE_WEIGHT:g} = "
          f"convscope's default style weight; relative normalization; its default TV term "
          f"{CONVSCOPE_TV_WEIGHT:g}·tv listed apart): lower is {win_cs}")
    print(f"- pastiche's objective, 0.01·MSE(relu4_2) + Σ 10/C²·MSE(Gram/HW) over relu1_1..relu5_1, "
          f"TV 0, style sized to the content's pixel count as pastiche does: lower is {win_pa} "
          f"(style at the long side instead: {win_pa_long})")
    print(f"- acceptance (ratio >= 1.3 and convscope <= pastiche under both objectives): "
          f"**{'PASS' if passed else 'FAIL'}**")
    print(f"- outputs: {out}")

    if a.json:
        record = {"settings": {k: str(v) for k, v in vars(a).items()}, "times_s": times,
                  "median_s": median, "ratio_pastiche_over_convscope": ratio, "scores": scores,
                  "winner_convscope_objective": win_cs, "winner_pastiche_objective": win_pa,
                  "winner_pastiche_objective_long_side_style": win_pa_long,
                  "acceptance_pass": passed, "machine": machine_info(a.device),
                  "loadavg_1min_before": load_before,
                  "commands": {t: commands(t, a, paths[t]) for t in paths}}
        a.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

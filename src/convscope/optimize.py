"""The one image-optimization loop.

Style transfer, texture synthesis, feature inversion, feature visualization and DeepDream all
optimize an image against an objective. This module owns that loop: the optimizer (L-BFGS, Adam,
SGD with exponential learning-rate decay), progress records to a callback, best-so-far tracking
for Ctrl-C, a NaN guard, and on CUDA the capture of a whole L-BFGS iteration in a CUDA graph.

An objective maps the image being optimized ([1, 3, H, W], float, RGB, nominally in [0, 1]) to a
dict of named, already-weighted scalar loss terms; their sum is minimized.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .errors import ConfigError, NumericalError
from .lbfgs import CompactLBFGS
from .options import MAX_LR, OPTIMIZERS

# Learning rates in units of the [0, 1] image. L-BFGS takes unit steps along its quasi-Newton
# direction; Adam moves each pixel by about lr per step; SGD (with momentum) follows the raw gradient.
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02, "sgd": 0.05}
# L-BFGS's first step for an optimization that starts from an image already near a solution (a
# one-pass stylization): it changes no pixel by more than this times lr, in [0, 1] units (see
# lbfgs.CompactLBFGS; lr is 1 by default). Torch's rule, min(1, 1/|g|₁), barely moves a 384 px
# image, which wastes the first iteration: from a feed-forward stylization, 5 iterations reached
# 2.12x / 2.32x the 300-iteration result's style loss with it, 1.78x / 2.10x with 0.03, and 10
# iterations 1.57x / 1.77x against 1.50x / 1.68x (0.02 and 0.05 did about as well; side runs on
# bench/fast.py's scorer, tubingen + starry_night and golden_gate + the_scream at 384 px, CPU;
# README has the bench's own). From the photo the same change did worse (20 iterations: 2.55x /
# 15.3x against 2.38x / 14.2x; 300: 1.008x / 1.032x against 1.003x / 1.002x), so optimizations
# from the content, noise or the style keep torch's rule.
WARM_START_FIRST_STEP = 0.03

Objective = Callable[[torch.Tensor], dict[str, torch.Tensor]]


@dataclass
class Progress:
    """What the loop reports after each iteration."""

    iteration: int            # 1-based, within this stage
    iterations: int           # iterations in this stage
    loss: float               # total of the terms at this iteration's image
    terms: dict[str, float]   # the named weighted terms
    elapsed: float            # seconds since the loop started
    stage: int = 1            # multi-scale stage, 1-based
    stages: int = 1
    image: torch.Tensor | None = None  # [1, 3, H, W] in [0, 1] on the CPU, when requested


@dataclass
class OptimizeResult:
    image: torch.Tensor               # last iterate [1, 3, H, W], clamped to [0, 1], on the device
    best_image: torch.Tensor          # lowest-loss image evaluated (the last iterate included), clamped
    best_loss: float
    best_terms: dict[str, float]      # the best image's weighted terms and "loss" (their total)
    history: list[dict[str, float]] = field(default_factory=list)  # per iteration: loss + terms
    seconds: float = 0.0
    graphed: bool = False             # whether a CUDA graph ran the iterations


class Interrupted(Exception):
    """Ctrl-C during optimization; carries the best image so far ([1, 3, H, W], CPU, [0, 1])."""

    def __init__(self, best_image: torch.Tensor, iteration: int, stage: int = 1, config=None):
        super().__init__(f"interrupted at iteration {iteration} of stage {stage}")
        self.best_image = best_image
        self.iteration = iteration
        self.stage = stage
        self.config = config  # the engine's resolved config, when it adds one


@contextlib.contextmanager
def precision_mode(precision: str, device: torch.device):
    """TF32 on or off for this block only (restored after), and bf16 autocast when asked for.

    "fp32": full float32 (TF32 off); "tf32": TF32 convolutions and matmuls on Ampere+ GPUs
    (10-bit mantissa in the products, float32 accumulation: no visible change in style transfer);
    "bf16": autocast the network to bfloat16 (Gram matrices and loss terms are computed in float32).
    """
    if precision not in ("fp32", "tf32", "bf16"):
        raise ConfigError(f"precision must be fp32, tf32 or bf16, not {precision!r}")
    tf32 = precision != "fp32"
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    # The image's shape is fixed for a whole run, so cuDNN's one-off algorithm search pays back.
    torch.backends.cudnn.benchmark = True
    try:
        if precision == "bf16":
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = saved


@dataclass
class _Step:
    """One iteration's pieces, shared by the eager and the graphed paths."""

    objective: Objective
    x: torch.Tensor
    optimizer: str
    opt: object
    best_x: torch.Tensor
    best_loss: torch.Tensor
    precision: str
    sched: object = None  # Adam/SGD learning-rate schedule
    # Learned from the first evaluation (before any graph capture): the term names, and buffers
    # [len(names) + 1] of terms then total, for this iteration's image and for the best image.
    names: list[str] | None = None
    terms_out: torch.Tensor | None = None
    best_terms: torch.Tensor | None = None
    iterations: int = 0
    # Every iteration's row, written on the device at a device-side counter, so the loop need
    # not stop the GPU to read the loss when nobody is listening.
    history: torch.Tensor | None = None
    counter: torch.Tensor | None = None

    def evaluate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(total, [terms..., total]) of the objective at x."""
        with precision_mode(self.precision, x.device):
            terms = self.objective(x)
        if self.names is None:
            self.names = sorted(terms)
            self.terms_out = torch.zeros(len(self.names) + 1, device=x.device)
            self.best_terms = torch.zeros_like(self.terms_out)
            self.history = torch.zeros(self.iterations, len(self.names) + 1, device=x.device)
            self.counter = torch.zeros(1, dtype=torch.long, device=x.device)
        values = torch.stack([terms[n].float() for n in self.names])
        total = values.sum()
        return total, torch.cat([values, total.view(1)])

    def keep_if_best(self, total: torch.Tensor, row: torch.Tensor, x: torch.Tensor) -> None:
        """Masked copies, no host sync: x becomes the best image if its total is the lowest yet."""
        better = total < self.best_loss
        self.best_x.copy_(torch.where(better, x, self.best_x))
        self.best_loss.copy_(torch.where(better, total, self.best_loss))
        self.best_terms.copy_(torch.where(better, row, self.best_terms))

    @torch.enable_grad()  # (under a caller's torch.no_grad() the backward pass had no graph: a RuntimeError)
    def __call__(self) -> None:
        total, row = self.evaluate(self.x)
        with torch.no_grad():
            # Track the best image before the update moves x.
            self.keep_if_best(total.detach(), row.detach(), self.x.detach())
            self.terms_out.copy_(row.detach())
            self.history.index_copy_(0, self.counter, row.detach().view(1, -1))
            self.counter += 1
        if self.optimizer == "lbfgs":
            (grad,) = torch.autograd.grad(total, self.x)
            self.opt.step(self.x.data, grad)
        else:
            self.opt.zero_grad(set_to_none=False)
            total.backward()
            self.opt.step()
            self.sched.step()
            with torch.no_grad():
                # First-order methods keep the image in range; L-BFGS must not (it would break its
                # curvature pairs), so its result is clamped only at the end.
                self.x.clamp_(0.0, 1.0)


def lbfgs_pairs(history: int, iterations: int) -> int:
    """The L-BFGS memory optimize_image allocates: a run of n iterations stores at most n - 1 pairs."""
    return max(1, min(int(history), int(iterations)))


def optimizer_state_bytes(optimizer: str, elements: int, iterations: int, lbfgs_history: int = 100) -> int:
    """Bytes optimize_image's optimizer allocates for `elements` float32 values, for a memory check
    before the run (devices.check_fits): L-BFGS's [2m, n] pairs and two n-vectors (m =
    lbfgs_pairs), Adam's two moments, SGD's momentum."""
    per = 2 * lbfgs_pairs(lbfgs_history, iterations) + 2 if optimizer == "lbfgs" else 2 if optimizer == "adam" else 1
    return 4 * int(elements) * per


def optimize_image(x0: torch.Tensor, objective: Objective, *, iterations: int,
                   optimizer: str = "lbfgs", lr: float | None = None, lr_decay: float = 1.0,
                   lbfgs_history: int = 100, lbfgs_first_step: float | None = None,
                   precision: str = "fp32", cuda_graph: bool = True,
                   callback: Callable[[Progress], None] | None = None,
                   want_image: Callable[[int], bool] | None = None,
                   report_at: Callable[[int], bool] | None = None,
                   stage: int = 1, stages: int = 1, clock_start: float | None = None) -> OptimizeResult:
    """Minimize the sum of `objective`'s terms over the image, starting at `x0` [1, 3, H, W].

    Args:
        iterations: optimizer iterations (one objective evaluation each; L-BFGS takes fixed steps
            without a line search, as the classic style-transfer tools do).
        lr: step size; None picks DEFAULT_LR for the optimizer. lr_decay: per-iteration
            exponential decay factor for Adam/SGD (1.0 = constant).
        lbfgs_first_step: the largest pixel change of L-BFGS's first step, times lr (None:
            torch's rule; WARM_START_FIRST_STEP suits a start near a solution).
        precision: "fp32", "tf32" or "bf16" (see precision_mode).
        cuda_graph: on CUDA, capture one L-BFGS iteration in a CUDA graph after a warm-up and replay
            it (removes Python and launch overhead; same arithmetic).
        callback: receives a Progress after each iteration (a host sync: it reads the loss).
        want_image: iteration -> whether the Progress should carry the image.
        report_at: iteration -> whether to call `callback` (default: every iteration). Each report
            reads the loss, a host sync; without reports the loop only syncs every 50 iterations.
        clock_start: time.perf_counter() origin for `elapsed` (multi-stage runs share one clock).

    Raises NumericalError on a NaN/inf loss and Interrupted (with the best image) on Ctrl-C.
    """
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    if iterations < 1:
        raise ConfigError(f"iterations must be at least 1, not {iterations}")
    lr = DEFAULT_LR[optimizer] if lr is None else float(lr)
    if not 0 < lr <= MAX_LR:
        raise ConfigError(f"learning rate must be positive and at most {MAX_LR:g}, not {lr}")
    if not 0 < lr_decay <= 1:
        raise ConfigError(f"lr decay must be in (0, 1], not {lr_decay}")
    if lbfgs_first_step is not None and not lbfgs_first_step > 0:
        raise ConfigError(f"L-BFGS's first step must be positive, not {lbfgs_first_step}")
    device = x0.device
    start = time.perf_counter() if clock_start is None else clock_start
    x = x0.detach().clone().float().requires_grad_(True)

    step = _Step(objective, x, optimizer, None, x.detach().clone(),
                 torch.full((), float("inf"), device=device), precision, iterations=iterations)
    use_graph = cuda_graph and device.type == "cuda" and optimizer == "lbfgs"
    if optimizer == "lbfgs":
        # A run of n iterations stores at most n - 1 pairs: a larger memory changes no iterate, it
        # only allocates (100 pairs of a 384x288 image: 265 MB and 64 ms on the CPU for a 3-iteration
        # warm start; of 1024x768: 1.9 GB).
        step.opt = CompactLBFGS(x.numel(), lbfgs_pairs(lbfgs_history, iterations), lr, device=device,
                                static_shapes=use_graph, first_step=lbfgs_first_step)
    else:
        step.opt = (torch.optim.Adam([x], lr=lr) if optimizer == "adam"
                    else torch.optim.SGD([x], lr=lr, momentum=0.9, nesterov=True))
        step.sched = torch.optim.lr_scheduler.ExponentialLR(step.opt, gamma=lr_decay)

    run_step: Callable[[], None] = step
    graphed = False
    warmup = 3
    i = 0
    try:
        while i < iterations:
            if use_graph and not graphed and i == warmup and iterations - i > 2:
                run_step = _capture(step)
                graphed = True
            run_step()
            i += 1
            # Read the loss only when someone listens, or now and then for the NaN guard: each read
            # is a host sync that idles the GPU.
            report = callback is not None and (report_at is None or report_at(i))
            if not report and i % 50 and i != iterations:
                continue
            values = step.terms_out.tolist()
            if not all(map(_finite, values)):
                _raise_diverged(step)
            if report:
                image = None
                if want_image is not None and want_image(i):
                    image = x.detach().clamp(0, 1).cpu()
                record = dict(zip(step.names, values[:-1]), loss=values[-1])
                callback(Progress(i, iterations, values[-1], record, time.perf_counter() - start,
                                  stage, stages, image))
    except KeyboardInterrupt:
        best = step.best_x if i > 0 else x.detach()
        raise Interrupted(best.clamp(0, 1).cpu(), i, stage) from None
    # The last update was never evaluated; fixed-step L-BFGS is not monotone, so score it too
    # (one forward pass) and return whichever image is best.
    with torch.no_grad():
        step.keep_if_best(*step.evaluate(x.detach()), x.detach())
    history = [dict(zip(step.names, row[:-1]), loss=row[-1]) for row in step.history.tolist()]
    best = step.best_terms.tolist()
    best_terms = dict(zip(step.names, best[:-1]))
    best_terms["loss"] = best[-1]
    return OptimizeResult(x.detach().clamp(0, 1), step.best_x.clamp(0, 1), best[-1], best_terms,
                          history, time.perf_counter() - start, graphed)


def _raise_diverged(step: _Step) -> None:
    """NumericalError naming the first iteration whose loss was not finite."""
    rows = step.history[: int(step.counter)].tolist()
    first = next(k for k, row in enumerate(rows, start=1) if not all(map(_finite, row)))
    raise NumericalError(f"the loss became {rows[first - 1][-1]} at iteration {first}: the optimization "
                         "diverged; lower --lr or the loss weights")


def _finite(v: float) -> bool:
    return v == v and v not in (float("inf"), float("-inf"))


def _capture(step: _Step) -> Callable[[], None]:
    """Capture `step` (forward, backward, L-BFGS update) into a CUDA graph; return its replay.

    Capturing records kernels without running them, so the optimizer state is untouched. The
    warm-up iterations that ran before, on the current stream, were real iterations.
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream), torch.cuda.graph(graph, stream=stream):
        step()
    torch.cuda.current_stream().wait_stream(stream)
    return graph.replay

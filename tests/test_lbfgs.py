"""Compact L-BFGS: same iterates as torch.optim.LBFGS (no line search), ring buffer wrap-around."""

import pytest
import torch

from convscope.lbfgs import CompactLBFGS


def problem(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    a = a @ a.t() / n + 0.1 * torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64)
    return lambda x: 0.5 * x @ a @ x - b @ x + 0.05 * (x**4).sum()


@pytest.mark.parametrize("static_shapes", [False, True], ids=["prefix", "static"])
@pytest.mark.parametrize("history,iterations", [(100, 25), (5, 30), (3, 40)])
def test_matches_torch_lbfgs(history, iterations, static_shapes):
    f = problem()
    x_ref = torch.zeros(40, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([x_ref], lr=0.7, max_iter=iterations, history_size=history,
                            tolerance_grad=0, tolerance_change=0)

    def closure():
        opt.zero_grad()
        loss = f(x_ref)
        loss.backward()
        return loss

    opt.step(closure)
    x = torch.zeros(40, dtype=torch.float64, requires_grad=True)
    lbfgs = CompactLBFGS(40, history, lr=0.7, dtype=torch.float64, static_shapes=static_shapes)
    for _ in range(iterations):
        (g,) = torch.autograd.grad(f(x), x)
        lbfgs.step(x.data, g)
    torch.testing.assert_close(x, x_ref, rtol=1e-9, atol=1e-9)


def test_minimizes_rosenbrock_float32():
    def rosen(x):
        return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()

    x = torch.full((6,), -1.0, requires_grad=True)
    lbfgs = CompactLBFGS(6, history=10, lr=1.0)
    start = rosen(x).item()
    for _ in range(300):
        (g,) = torch.autograd.grad(rosen(x), x)
        lbfgs.step(x.data, g)
    assert rosen(x).item() < 1e-3 * start


def test_rejected_pairs_keep_steps_safe():
    """A badly scaled non-convex start (huge gradient, negative curvature) must not blow up."""
    def f(x):
        return 1e12 * (x**4).sum() - 1e10 * (x**2).sum()

    x = torch.full((10,), 0.3, requires_grad=True)
    lbfgs = CompactLBFGS(10, history=5)
    for _ in range(20):
        (g,) = torch.autograd.grad(f(x), x)
        lbfgs.step(x.data, g)
    assert torch.isfinite(x).all() and x.abs().max() < 1.0


@pytest.mark.parametrize("static_shapes", [False, True], ids=["prefix", "static"])
def test_first_step_bounds_the_largest_change(static_shapes):
    """first_step: the first step changes no element by more than first_step·lr (the largest-gradient
    element by exactly that), and the quasi-Newton steps after it go on lowering the loss."""
    f = problem()
    x = torch.zeros(40, dtype=torch.float64, requires_grad=True)
    lbfgs = CompactLBFGS(40, 5, lr=0.5, dtype=torch.float64, static_shapes=static_shapes, first_step=0.04)
    (g,) = torch.autograd.grad(f(x), x)
    lbfgs.step(x.data, g)
    torch.testing.assert_close(x.detach().abs().max(), torch.tensor(0.02, dtype=torch.float64))
    torch.testing.assert_close(x.detach(), -0.02 * g / g.abs().max())
    start = f(x).item()
    for _ in range(30):
        (g,) = torch.autograd.grad(f(x), x)
        lbfgs.step(x.data, g)
    assert f(x).item() < start


def test_first_step_on_a_large_image_moves_further_than_torchs_rule():
    """Torch's min(1, 1/|g|₁) scale shrinks with the number of pixels; a bounded pixel change does not."""
    target = torch.rand(3 * 256 * 256, generator=torch.Generator().manual_seed(0))
    losses = {}
    for first_step in (None, 0.03):
        x = torch.zeros_like(target, requires_grad=True)
        lbfgs = CompactLBFGS(x.numel(), 10, first_step=first_step)
        (g,) = torch.autograd.grad(((x - target) ** 2).sum(), x)
        lbfgs.step(x.data, g)
        losses[first_step] = ((x - target) ** 2).sum().item()
    start = (target**2).sum().item()
    assert losses[None] > 0.9999 * start  # torch's first step: next to nothing
    assert losses[0.03] < 0.95 * start


def test_first_step_must_be_positive():
    with pytest.raises(ValueError):
        CompactLBFGS(4, first_step=0.0)


@pytest.mark.parametrize("static_shapes", [False, True], ids=["prefix", "static"])
def test_memory_beyond_the_iterations_changes_nothing(static_shapes):
    """n iterations store at most n - 1 pairs, so a memory of n gives the same iterates as 100
    (optimize_image caps the memory at the iterations for that reason: it is allocated up front)."""
    f = problem()
    runs = []
    for history in (8, 100):
        x = torch.zeros(40, dtype=torch.float64, requires_grad=True)
        lbfgs = CompactLBFGS(40, history, dtype=torch.float64, static_shapes=static_shapes, first_step=0.1)
        for _ in range(8):
            (g,) = torch.autograd.grad(f(x), x)
            lbfgs.step(x.data, g)
        runs.append(x.detach())
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-12, atol=1e-12)


def test_a_step_copies_no_history():
    """Before the memory is full a step works on the filled prefix of S and Y through views: it used
    to copy that prefix (index_select) twice a step, up to 2·m·n floats each, a third of the demo's time."""
    from torch.utils._python_dispatch import TorchDispatchMode

    n, m = 50, 10
    f = problem(n)
    x = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    lbfgs = CompactLBFGS(n, m, dtype=torch.float64)

    class Largest(TorchDispatchMode):
        numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            fresh = isinstance(out, torch.Tensor) and not func.is_view and not any(out is a for a in args)
            if fresh:  # a new tensor (in-place writes into the buffer return it, views share it)
                Largest.numel = max(Largest.numel, out.numel())
            return out

    for _ in range(8):
        (g,) = torch.autograd.grad(f(x), x)
        with Largest():
            lbfgs.step(x.data, g)
    assert Largest.numel <= 3 * n  # the new (s, y) pair and the gradient; a copy of k pairs is 2·k·n

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

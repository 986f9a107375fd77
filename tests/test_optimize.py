"""The shared image-optimization loop: every optimizer lowers the loss; progress; NaN; Ctrl-C."""

import pytest
import torch

from convscope.errors import ConfigError, NumericalError
from convscope.optimize import Interrupted, optimize_image, precision_mode


def target_objective(seed=0, size=12):
    """Pull the image towards a fixed target, with a small smoothness term: a convex test problem."""
    target = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))

    def objective(x):
        return {"fit": ((x - target) ** 2).mean() * 10, "smooth": (x[..., 1:] - x[..., :-1]).pow(2).mean() * 0.01}

    return objective


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam", "sgd"])
def test_each_optimizer_lowers_the_loss(optimizer):
    x0 = torch.full((1, 3, 12, 12), 0.5)
    result = optimize_image(x0, target_objective(), iterations=30, optimizer=optimizer)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 30
    assert losses[-1] < 0.5 * losses[0]
    assert result.best_loss <= min(losses) + 1e-12
    assert result.best_image.shape == x0.shape and 0 <= result.best_image.min() <= result.best_image.max() <= 1


def test_progress_records_and_images_on_request():
    seen = []
    optimize_image(torch.full((1, 3, 8, 8), 0.5), target_objective(size=8), iterations=6,
                   callback=seen.append, want_image=lambda i: i % 3 == 0)
    assert [p.iteration for p in seen] == [1, 2, 3, 4, 5, 6]
    assert all(p.iterations == 6 and set(p.terms) == {"fit", "smooth", "loss"} for p in seen)
    assert [p.image is not None for p in seen] == [False, False, True, False, False, True]
    assert seen[2].image.shape == (1, 3, 8, 8) and seen[2].image.device.type == "cpu"
    assert all(b.elapsed >= a.elapsed for a, b in zip(seen, seen[1:]))


def test_lr_decay_slows_adam():
    x0 = torch.full((1, 3, 8, 8), 0.5)
    fast = optimize_image(x0, target_objective(size=8), iterations=20, optimizer="adam")
    slow = optimize_image(x0, target_objective(size=8), iterations=20, optimizer="adam", lr_decay=0.7)
    assert slow.history[-1]["loss"] > fast.history[-1]["loss"]


def test_nan_is_a_clear_error():
    def objective(x):
        return {"bad": (x * float("nan")).sum()}

    with pytest.raises(NumericalError, match="diverged"):
        optimize_image(torch.rand(1, 3, 4, 4), objective, iterations=5)


def test_ctrl_c_gives_the_best_image_so_far():
    base = target_objective(size=8)
    calls = {"n": 0}

    def objective(x):
        calls["n"] += 1
        if calls["n"] == 4:  # 3 iterations, then Ctrl-C in the 4th
            raise KeyboardInterrupt
        return base(x)

    with pytest.raises(Interrupted) as info:
        optimize_image(torch.full((1, 3, 8, 8), 0.5), objective, iterations=50)
    assert info.value.iteration == 3
    assert info.value.best_image.shape == (1, 3, 8, 8)


def test_bad_options():
    x0, obj = torch.rand(1, 3, 4, 4), target_objective(size=4)
    for kwargs in ({"optimizer": "rmsprop"}, {"iterations": 0}, {"lr": -1.0}, {"lr_decay": 1.5},
                   {"precision": "fp8"}, {"lbfgs_first_step": 0.0}, {"lbfgs_first_step": -0.1}):
        with pytest.raises(ConfigError):
            optimize_image(x0, obj, **{"iterations": 2, **kwargs})


def test_precision_mode_restores_global_flags():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with precision_mode("tf32", torch.device("cpu")):
        assert torch.backends.cudnn.allow_tf32
    with precision_mode("fp32", torch.device("cpu")):
        assert not torch.backends.cuda.matmul.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_matches_eager():
    target = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)).cuda()

    def objective(x):
        return {"fit": ((x - target) ** 2).mean() * 10, "smooth": (x[..., 1:] - x[..., :-1]).pow(2).mean()}

    x0 = torch.full((1, 3, 16, 16), 0.5, device="cuda")
    eager = optimize_image(x0, objective, iterations=20, cuda_graph=False, precision="fp32")
    graphed = optimize_image(x0, objective, iterations=20, cuda_graph=True, precision="fp32")
    assert graphed.graphed and not eager.graphed
    torch.testing.assert_close(graphed.image, eager.image, rtol=1e-4, atol=1e-5)
    assert [h["loss"] for h in graphed.history] == pytest.approx([h["loss"] for h in eager.history], rel=1e-4)


def test_report_at_limits_callbacks_but_history_is_complete():
    seen = []
    result = optimize_image(torch.full((1, 3, 8, 8), 0.5), target_objective(size=8), iterations=7,
                            callback=seen.append, report_at=lambda i: i in (2, 5))
    assert [p.iteration for p in seen] == [2, 5]
    assert len(result.history) == 7 and result.history[1]["loss"] == pytest.approx(seen[0].loss)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]


def test_nan_without_callback_names_the_first_bad_iteration():
    calls = {"n": 0}

    def objective(x):
        calls["n"] += 1
        bad = float("nan") if calls["n"] >= 4 else 1.0
        return {"fit": ((x - 0.3) ** 2).mean() * bad}

    with pytest.raises(NumericalError, match="iteration 4"):
        optimize_image(torch.rand(1, 3, 4, 4), objective, iterations=60)


def test_lbfgs_memory_is_not_larger_than_the_iterations(monkeypatch):
    import convscope.optimize as optimize

    sizes = []
    real = optimize.CompactLBFGS

    def spy(n, history, *args, **kwargs):
        sizes.append(history)
        return real(n, history, *args, **kwargs)

    monkeypatch.setattr(optimize, "CompactLBFGS", spy)
    for iterations in (3, 150):
        optimize_image(torch.full((1, 3, 8, 8), 0.5), target_objective(size=8), iterations=iterations)
    assert sizes == [3, 100]

"""Losses: definitions, normalizations, zeros at targets, gradients."""

import pytest
import torch

from convscope.errors import ConfigError
from convscope.losses import content_loss, gram, mean_std_loss, style_loss, tv_loss


def feats(seed=0, shape=(1, 8, 5, 7)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_gram_matches_definition():
    f = feats()
    n, c, h, w = f.shape
    m = f.reshape(c, h * w)
    torch.testing.assert_close(gram(f, "hw")[0], m @ m.t() / (h * w))
    torch.testing.assert_close(gram(f, "chw")[0], m @ m.t() / (c * h * w))


def test_gatys_normalization_is_one_over_4c2hw2():
    f, t = feats(0), feats(1)
    n, c, h, w = f.shape
    a, b = f.reshape(c, -1), t.reshape(c, -1)
    expected = ((a @ a.t() - b @ b.t()) ** 2).sum() / (4 * c**2 * (h * w) ** 2)
    torch.testing.assert_close(style_loss(f, gram(t, "gatys"), "gatys"), expected)


def test_style_loss_zero_at_target_positive_elsewhere_with_gradient():
    f, t = feats(0), feats(1)
    assert style_loss(f, gram(f, "hw"), "hw").item() == pytest.approx(0.0, abs=1e-9)
    x = f.clone().requires_grad_(True)
    loss = style_loss(x, gram(t, "hw"), "hw")
    loss.backward()
    assert loss.item() > 0 and x.grad.abs().sum() > 0


def test_content_loss():
    f, t = feats(0), feats(1)
    assert content_loss(f, f).item() == 0.0
    torch.testing.assert_close(content_loss(f, t), ((f - t) ** 2).mean())


def test_mean_std_loss_zero_for_same_statistics():
    f = feats(0)
    shuffled = f.flatten(2)[..., torch.randperm(35)].reshape(f.shape)  # same stats, other layout
    assert mean_std_loss(f, shuffled).item() == pytest.approx(0.0, abs=1e-6)
    assert mean_std_loss(f, f * 2 + 1).item() > 0.1


def test_tv_losses():
    flat = torch.full((1, 3, 6, 6), 0.4)
    assert tv_loss(flat).item() == 0.0
    assert tv_loss(flat, "beta").item() == pytest.approx(0.0, abs=1e-4)
    ramp = torch.arange(6.0).view(1, 1, 1, 6).expand(1, 3, 6, 6) * 0.1  # dx = 0.1 everywhere, dy = 0
    assert tv_loss(ramp).item() == pytest.approx(0.01)
    assert tv_loss(ramp, "beta", beta=1.25).item() == pytest.approx(0.1 ** 1.25, rel=1e-3)
    x = flat.clone().requires_grad_(True)
    tv_loss(x, "beta").backward()  # finite gradient where the image is flat
    assert torch.isfinite(x.grad).all()


def test_bad_names():
    with pytest.raises(ConfigError):
        gram(feats(), "nope")
    with pytest.raises(ConfigError):
        tv_loss(torch.zeros(1, 3, 4, 4), "cubic")


def test_range_penalty():
    from convscope.losses import range_penalty

    assert range_penalty(torch.rand(1, 3, 4, 4)).item() == 0.0
    x = torch.zeros(1, 1, 1, 2)
    x[..., 0], x[..., 1] = 1.5, -0.5
    assert range_penalty(x).item() == pytest.approx(0.25)


def test_gram_same_for_channels_last_memory():
    f = feats(3, (2, 6, 5, 4))
    nhwc = f.contiguous(memory_format=torch.channels_last)
    for norm in ("hw", "chw"):
        torch.testing.assert_close(gram(nhwc, norm), gram(f, norm))
    x = nhwc.clone().requires_grad_(True)
    style_loss(x, gram(feats(4, (2, 6, 5, 4)), "hw"), "hw").backward()
    y = f.clone().requires_grad_(True)
    style_loss(y, gram(feats(4, (2, 6, 5, 4)), "hw"), "hw").backward()
    torch.testing.assert_close(x.grad, y.grad)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_gram_gradient_is_exact(layout):
    from convscope.losses import _Gram

    f = feats(5, (2, 6, 5, 4)).double().contiguous(memory_format=layout).requires_grad_(True)
    # gradcheck feeds arbitrary (non-symmetric) upstream gradients, so the (dG + dGᵀ) form is checked too
    assert torch.autograd.gradcheck(lambda t: _Gram.apply(t, 20), (f,))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_gram_backward_passes_over_the_feature_map_once(layout):
    """Style transfer's hottest loss: its backward makes one feature-sized tensor (a single matmul),
    not two matmuls, two scalings and a sum as autograd of the matmul did."""
    from torch.utils._python_dispatch import TorchDispatchMode

    f = feats(6, (1, 8, 12, 10)).contiguous(memory_format=layout).requires_grad_(True)
    loss = style_loss(f, gram(feats(7, (1, 8, 12, 10)), "hw"), "hw")

    class FeatureSized(TorchDispatchMode):
        ops: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and out.numel() == f.numel() and not func.is_view:
                self.ops.append(str(func))
            return out

    with FeatureSized() as mode:
        (grad,) = torch.autograd.grad(loss, f)
    assert len(mode.ops) == 1, mode.ops
    assert grad.shape == f.shape and grad.is_contiguous(memory_format=layout)

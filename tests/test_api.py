"""The Python API as a notebook uses it: argument checks at each engine's door (one-line
UserErrors, not a deep torch error or a silently wrong image) and no side effects on the caller's
process state (RNG, grad mode, default dtype, threads)."""

from __future__ import annotations

import pytest
import torch

from convscope.errors import ImageError
from convscope.fast.apply import FastConfig, FastStylizer
from convscope.fast.models import STYLE_KIND, save_model
from convscope.fast.nets import TransformerNet


def _tiny_style_model(path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return save_model(path, STYLE_KIND, TransformerNet((4, 8, 8), 1), {"card": {"painting": "test"}})


def test_fast_stylizer_tensor_refuses_values_outside_0_1(tmp_path):
    # FastStylizer.tensor took a 0..255 float batch and returned a stylized image of a white photo.
    st = FastStylizer(str(_tiny_style_model(tmp_path / "m.safetensors")), FastConfig(device="cpu", precision="fp32"))
    x = torch.rand(2, 3, 16, 16)
    assert st.tensor(x).shape == (2, 3, 16, 16)
    for bad, words in ((x * 255, "x / 255"), (x * 2 - 1, "(x + 1) / 2"), (x.clone().fill_(float("nan")), "NaN")):
        with pytest.raises(ImageError, match="^the content batch ") as info:
            st.tensor(bad)
        assert words in str(info.value)

"""The Python API's argument checks: one-line ConfigErrors naming the argument."""

import numpy as np
import pytest
import torch
from PIL import Image

from convscope.argcheck import as_image, callback_or_none, check_image_batch, config_of, flag
from convscope.errors import ConfigError, ImageError
from convscope.style.config import StyleConfig
from convscope.vis.explain import ExplainConfig


def test_config_of_passes_the_right_kind_and_names_the_wrong_one():
    c = StyleConfig()
    assert config_of(c, StyleConfig) is c
    with pytest.raises(ConfigError, match=r"^config must be a StyleConfig, not dict; use StyleConfig\(\*\*d\)$"):
        config_of({"size": 64}, StyleConfig)
    with pytest.raises(ConfigError, match=r"^config must be an ExplainConfig or StyleConfig, not int \(see\)$"):
        config_of(3, ExplainConfig, StyleConfig, note=" (see)")


def test_callback_and_flag():
    f = print
    assert callback_or_none(None, "Progress") is None and callback_or_none(f, "Progress") is f
    with pytest.raises(ConfigError, match=r"^callback must be a function taking a Progress \(or None\), not int$"):
        callback_or_none(5, "Progress")
    assert flag(False, "resume") is False
    with pytest.raises(ConfigError, match=r"^resume must be True or False, not 'no'$"):
        flag("no", "resume")


def test_as_image_takes_paths_pil_and_tensors_and_names_the_argument_otherwise(tmp_path):
    rgb = Image.new("RGB", (5, 4), (10, 20, 30))
    rgb.save(tmp_path / "a.png")
    for x in (str(tmp_path / "a.png"), tmp_path / "a.png", rgb.convert("RGBA"),
              torch.tensor([10, 20, 30]).div(255).view(3, 1, 1).expand(3, 4, 5).clone()):
        out = as_image(x, "content")
        assert (out.mode, out.size, out.getpixel((0, 0))) == ("RGB", (5, 4), (10, 20, 30))
    for bad, words in ((np.zeros((4, 5, 3), np.uint8), "PIL.Image.fromarray"), (None, "NoneType"),
                       (torch.zeros(1, 3, 4, 5, dtype=torch.uint8), "x.float() / 255"),
                       (torch.zeros(2, 3, 4, 5), "1 image"), (torch.zeros(1, 4, 5, 3), "permute")):
        with pytest.raises(ImageError, match="content") as info:
            as_image(bad, "content")
        assert words in str(info.value) and "\n" not in str(info.value)


def test_check_image_batch_shapes_dtypes_and_empty():
    x = torch.zeros(2, 3, 4, 5)
    assert check_image_batch(x) is x
    for bad, words in ((torch.zeros(3, 4, 5), "unsqueeze(0)"), (torch.zeros(1, 1, 4, 5), "3 (RGB)"),
                       (torch.zeros(1, 3, 0, 5), "empty"), (torch.zeros(1, 3, 4, 5, dtype=torch.int64), "float"),
                       ([[0.0]], "list")):
        with pytest.raises(ImageError, match="batch") as info:
            check_image_batch(bad, "batch")
        assert words in str(info.value)


def test_as_image_refuses_tensors_whose_values_are_not_an_image_in_0_1():
    # These used to be clamped silently: a 0..255 float tensor came out white, a [-1, 1] one with
    # its dark half black, NaN as black, all without a word.
    x = torch.rand(1, 3, 4, 5)
    inf = x.clone().index_fill_(3, torch.tensor([1]), float("inf"))
    for bad, words in ((x * 255, "x / 255"), (x * 2 - 1, "(x + 1) / 2"), (x.sub(0.45).div(0.225), "normalization"),
                       (torch.full((3, 4, 5), float("nan")), "NaN"), (inf, "infinite"),
                       (torch.empty(1, 3, 4, 5, device="meta"), "meta tensor")):
        with pytest.raises(ImageError, match="^content ") as info:
            as_image(bad, "content")
        assert words in str(info.value) and "\n" not in str(info.value)
    # a resampling overshoot is still an image in [0, 1]: clipped, as before
    out = as_image(x.mul(1.2).sub(0.1).half(), "content")
    assert (out.mode, out.size) == ("RGB", (5, 4))

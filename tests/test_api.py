"""The Python API as a notebook uses it: argument checks at each engine's door (one-line
UserErrors, not a deep torch error or a silently wrong image) and no side effects on the caller's
process state (RNG, grad mode, default dtype, threads)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from PIL import Image

from convscope.errors import ConfigError, ImageError
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


def test_the_stylizers_check_the_values_of_cpu_batches_only(monkeypatch):
    # On a GPU the check reads a reduction back: every call waited for the device (a video's frames,
    # bench/fast.py's GPU loop). A batch that is not on the CPU is checked for shape and dtype only.
    from convscope.fast import apply

    seen = []
    monkeypatch.setattr(apply, "check_image_values", lambda x, what: seen.append(x.device.type) or x)
    apply._check_batch(torch.rand(1, 3, 8, 8))
    apply._check_batch(torch.empty(1, 3, 8, 8, device="meta"))  # (a stand-in for a GPU tensor)
    assert seen == ["cpu"]
    with pytest.raises(ImageError, match="float"):
        apply._check_batch(torch.zeros(1, 3, 8, 8, dtype=torch.uint8, device="meta"))


def _engines():
    from convscope.vis.dream import dream
    from convscope.vis.invert import invert
    from convscope.vis.texture import synthesize
    from convscope.vis.topact import top_activations
    from convscope.style.gatys import stylize_images

    return {"invert": invert, "dream": dream, "synthesize": synthesize, "stylize_images": stylize_images,
            "top_activations": top_activations}


@pytest.mark.parametrize("name", ["invert", "dream", "synthesize", "stylize_images", "top_activations"])
def test_engines_name_a_config_or_callback_of_the_wrong_kind(name, tmp_path):
    # A dict for the config was an AttributeError ('dict' object has no attribute 'validate'), and a
    # callback that is not a function a TypeError at the first iteration, after the net had loaded.
    engine = _engines()[name]
    image = torch.rand(1, 3, 40, 40)
    first = [str(tmp_path)] if name == "top_activations" else [image, image] if name == "stylize_images" else [image]
    with pytest.raises(ConfigError, match=r"^config must be an? \w+Config, not dict; use \w+Config\(\*\*d\)$"):
        engine(*first, {"size": 32})
    with pytest.raises(ConfigError, match=r"^callback must be a function taking an? \w+ \(or None\), not int$"):
        engine(*first, None, callback=3)


def test_top_activations_names_a_folder_or_net_of_the_wrong_kind():
    from convscope.vis.topact import top_activations

    with pytest.raises(ConfigError, match="^folder must be a folder path, not NoneType$"):
        top_activations(None)
    with pytest.raises(ConfigError, match="^net must be a loaded net"):
        top_activations(".", net="vgg19")


def test_stylize_images_takes_the_image_forms_stylize_takes(tmp_path):
    # The engine README names took only PIL images: a path was "'str' object has no attribute
    # 'size'", a tensor or a single style (not in a list) a TypeError.
    from convscope.style.gatys import stylize_images
    from convscope.style.config import StyleConfig

    Image.fromarray((np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)).save(tmp_path / "c.png")
    config = StyleConfig(size=32, iterations=1, device="cpu", precision="fp32")
    result = stylize_images(tmp_path / "c.png", torch.rand(3, 40, 40), config)
    assert result.image.mode == "RGB" and result.image.size == (32, 27)
    with pytest.raises(ImageError, match="^style image 1 has values from"):
        stylize_images(str(tmp_path / "c.png"), [torch.rand(1, 3, 40, 40) * 255], config)


def _leaves_the_rng_alone(call) -> bool:
    """Whether `call()` leaves the caller's seeded CPU sequence as it was."""
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    call()
    return torch.equal(torch.rand(4), expected)


def test_loading_and_training_leave_the_callers_rng_alone(tmp_path):
    # Building a style model drew its (then replaced) initialization from the caller's generator, and
    # every training reseeded it to config.seed: after train_style(...) a notebook's seeded
    # torch.rand(...) gave other numbers than without it.
    from convscope.classify.config import TrainConfig
    from convscope.classify.data import DataSplits, ImageData
    from convscope.classify.lrfind import find_lr
    from convscope.classify.train import train
    from convscope.fast.config import TrainStyleConfig
    from convscope.fast.train import train_style

    model = _tiny_style_model(tmp_path / "m.safetensors")
    assert _leaves_the_rng_alone(lambda: FastStylizer(str(model), FastConfig(device="cpu")))
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray((np.random.default_rng(i).random((40, 40, 3)) * 255).astype(np.uint8)).save(photos / f"{i}.png")
    style = TrainStyleConfig(size=32, batch_size=1, steps=1, style_size=32, widths=(4, 8, 8), residual_blocks=1,
                             preview_every=0, checkpoint_every=1, device="cpu", precision="fp32")
    assert _leaves_the_rng_alone(lambda: train_style(photos / "0.png", photos, tmp_path / "s.safetensors", style))
    g = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 255, (12, 3, 16, 16), generator=g, dtype=torch.uint8), torch.arange(12) % 2,
                     ["a", "b"], None, [])
    splits = DataSplits(data, data, "synthetic", "test")
    config = TrainConfig(model="simple", epochs=1, batch_size=4, input_size=16, device="cpu")
    assert _leaves_the_rng_alone(lambda: train(splits, config, tmp_path / "run"))

    def sweep():  # (on noise the loss may not fall: a ConfigError, after which the RNG is restored too)
        with contextlib.suppress(ConfigError):
            find_lr(splits, config, start=1e-4, end=1.0, steps=10)

    assert _leaves_the_rng_alone(sweep)


def test_top_level_names_are_listed_and_configs_list_their_options():
    # dir(convscope) (a notebook's tab completion) showed neither stylize nor get_net: they load lazily.
    import inspect

    import convscope
    from convscope.classify.config import TrainConfig
    from convscope.fast.config import FastConfig, TrainStyleConfig
    from convscope.vis.configs import ExplainConfig

    assert set(convscope.__all__) <= set(dir(convscope))
    for name in convscope.__all__:
        assert name == "__version__" or inspect.getdoc(getattr(convscope, name))
    # help(StyleConfig) showed only the generated signature: now each option with its default and meaning
    for cls, line in ((convscope.StyleConfig, "size = 512: long side of the output in pixels"),
                      (ExplainConfig, "net = 'efficientnet_lite0': network:"), (TrainConfig, "model = 'simple': "),
                      (FastConfig, "alpha = 1.0: "), (TrainStyleConfig, "steps = 4000: ")):
        assert line in inspect.getdoc(cls) and "MISSING" not in inspect.getdoc(cls)
    # ... and so does every other config a notebook builds (they showed the signature only).
    import re
    from dataclasses import fields

    from convscope.classify.config import ExportConfig
    from convscope.fast.config import TrainArbitraryConfig, VideoConfig
    from convscope.vis.configs import ActivationsConfig, TopActConfig
    from convscope.vis.configs_render import ClassVizConfig, DreamConfig, FeatureVizConfig, InvertConfig, TextureConfig

    for cls in (ExportConfig, TrainArbitraryConfig, VideoConfig, ActivationsConfig, TopActConfig, ClassVizConfig,
                DreamConfig, FeatureVizConfig, InvertConfig, TextureConfig):
        doc = inspect.getdoc(cls)
        assert "Fields (default: meaning):" in doc, cls
        documented = [f.name for f in fields(cls) if "help" in f.metadata]
        assert documented and all(re.search(rf"^\s*{name} = .+: ", doc, re.M) for name in documented), cls


def test_fast_stylizer_tensor_refuses_an_empty_batch(tmp_path):
    path = tmp_path / "tiny.safetensors"
    _tiny_style_model(path)
    with pytest.raises(ImageError, match="holds no images"):
        FastStylizer(str(path), FastConfig(device="cpu")).tensor(torch.rand(0, 3, 8, 8))


def test_explain_names_a_net_of_the_wrong_kind():
    # net=5 was an AttributeError ('int' object has no attribute 'parameters').
    from convscope.vis.explain import ExplainConfig, explain

    with pytest.raises(ConfigError, match="^net must be a loaded net"):
        explain(Image.new("RGB", (32, 32)), ExplainConfig(net="efficientnet_lite0", size=32), net=5)


def test_arbitrary_labels_and_explain_figure_name_a_wrong_argument():
    # labels=5 was a raw TypeError ('int' object is not iterable); explain_figure(None) an AttributeError.
    from convscope.fast.apply import ArbitraryStylizer, FastConfig
    from convscope.vis.explain import explain_figure

    s = ArbitraryStylizer(config=FastConfig(size=32, device="cpu", precision="fp32"))
    photo = Image.new("RGB", (32, 32), (120, 30, 200))
    for bad in (5, "content.png", [1, 2]):
        with pytest.raises(ConfigError, match="^labels must be a list of names"):
            s(photo, [photo], labels=bad)
    assert s(photo, [photo], labels=("c.png", "s.png")).size == (32, 32)  # names as a tuple: fine
    with pytest.raises(ConfigError, match="^explain_figure draws what explain\\(\\) returns, not NoneType"):
        explain_figure(None)


def test_engines_name_a_plain_torch_module_as_the_net():
    # net=nn.Linear(2, 2) was an AttributeError ('Linear' object has no attribute 'block_outputs').
    from convscope.vis.activations import ActivationsConfig, activations
    from convscope.vis.explain import ExplainConfig, explain

    photo = Image.new("RGB", (32, 32))
    with pytest.raises(ConfigError, match="^net must be a loaded net .* plain Linear module"):
        activations(photo, ActivationsConfig(size=32), net=torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="^net must be a loaded net .* plain Sequential module"):
        explain(photo, ExplainConfig(size=32), net=torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)))



def _photos(folder):
    folder.mkdir()
    for i in range(2):
        Image.fromarray((np.random.default_rng(i).random((40, 40, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def _tiny_splits():
    from convscope.classify.config import TrainConfig
    from convscope.classify.data import DataSplits, ImageData

    g = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 255, (12, 3, 16, 16), generator=g, dtype=torch.uint8), torch.arange(12) % 2,
                     ["a", "b"], None, [])
    return DataSplits(data, data, "synthetic", "test"), TrainConfig(model="simple", epochs=1, batch_size=4,
                                                                    input_size=16, device="cpu")


def _stylize(tmp_path):
    import convscope

    photos = _photos(tmp_path / "photos")
    image = convscope.stylize(photos / "0.png", photos / "1.png", size=32, iterations=1, device="cpu", precision="fp32")
    assert image.size == (32, 32)


def _train_style(tmp_path):
    from convscope.fast.config import TrainStyleConfig
    from convscope.fast.train import train_style

    photos = _photos(tmp_path / "photos")
    style = TrainStyleConfig(size=32, batch_size=1, steps=1, style_size=32, widths=(4, 8, 8), residual_blocks=1,
                             preview_every=0, checkpoint_every=1, device="cpu", precision="fp32")
    assert train_style(photos / "0.png", photos, tmp_path / "s.safetensors", style).steps == 1


def _classify_train(tmp_path):
    from convscope.classify.train import train

    assert train(*_tiny_splits(), tmp_path / "run").epochs_run == 1


def _find_lr(tmp_path):
    from convscope.classify.lrfind import find_lr

    with contextlib.suppress(ConfigError):  # (on noise the loss may not fall)
        find_lr(*_tiny_splits(), start=1e-4, end=1.0, steps=10)


@pytest.mark.parametrize("engine", [_stylize, _train_style, _classify_train, _find_lr])
def test_engines_that_need_gradients_run_under_a_callers_no_grad(engine, tmp_path):
    # A notebook that had called torch.set_grad_enabled(False) (or sat in a `with torch.no_grad():`)
    # got "RuntimeError: element 0 of tensors does not require grad and does not have a grad_fn" from
    # stylize, train_style, classify's train and find_lr. They turn gradients on for their own steps
    # and leave the caller's mode as it was.
    with torch.no_grad():
        engine(tmp_path)
        assert not torch.is_grad_enabled()


def test_style_config_refuses_a_flag_that_is_not_a_bool():
    # cuda_graph="no" (or 0) was taken without a word and counted as True.
    from convscope.style.config import StyleConfig

    for value in ("no", 0, None):
        with pytest.raises(ConfigError, match="^cuda_graph must be True or False, not "):
            StyleConfig(cuda_graph=value).validate()
    assert StyleConfig(cuda_graph=False).validate().cuda_graph is False

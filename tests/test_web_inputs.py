"""The web UI's handlers given what a browser or an API client can send, and run folders damaged
after the server found them: one-line messages naming the page's fields and the runs' labels,
never a traceback, a server path or a CLI command."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from convscope.errors import ConfigError
from convscope.web.limits import Limits

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def record(path, name=None) -> dict:
    """What Gradio hands a handler for an uploaded file."""
    return {"path": str(path), "orig_name": name or path.name, "meta": {"_type": "gradio.FileData"}}


def form(cls, specs, **values) -> dict:
    """The values an untouched form sends (the config's defaults), with `values` typed in."""
    pytest.importorskip("gradio")  # (the widgets hold the defaults; the handlers need no Gradio)
    from convscope.web.widgets import make_widget

    return {**{(sp if isinstance(sp, str) else sp.name): make_widget(cls, sp).value for sp in specs}, **values}


@pytest.fixture
def uploads(tmp_path):
    root = tmp_path / "uploads"
    root.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((40, 50, 3)) * 255).astype(np.uint8)).save(root / "photo.png")
    return root


def _handlers(uploads, runs=None):
    from convscope.web.handlers import Handlers, Settings
    from convscope.web.handlers_inside import InsideHandlers

    h = Handlers(Settings(limits=Limits(upload_root=uploads), device="cpu", runs=runs))
    return h, InsideHandlers(h)


@pytest.fixture
def handlers(uploads):
    h, inside = _handlers(uploads)
    yield h, inside
    h.cleanup()


def _one_line_in_form_terms(text: str) -> None:
    assert "--" not in text and "convscope " not in text and "\n" not in text, text


@pytest.mark.parametrize("tab, values, message", [
    # L-BFGS put the step size in a float32 tensor: 1e308 raised a RuntimeError (an internal error
    # on the page, a traceback in the server log; the CLI printed the traceback).
    ("gatys", {"lr": 1e308}, "lr must be at most 1e+06, not 1e+308"),
    ("texture", {"lr": 1e308}, "lr must be at most 1e+06, not 1e+308"),
    ("invert", {"lr": 1e308}, "lr must be at most 1e+06, not 1e+308"),
    # Inversion alone took any number of iterations, and allocated a loss history that long up
    # front: 10**12 was "the device ran out of memory; use a smaller size", 1e308 a TypeError.
    ("invert", {"iterations": 10**12}, "iterations must be a whole number from 1 to 1000000, not 1000000000000"),
    ("invert", {"iterations": 1e308}, "iterations must be a whole number below 2**63, not '1e+308'"),
    # 0 (automatic, the default) is allowed: the range said "from 1 to 8".
    ("gatys", {"scales": 9}, "scales must be a whole number from 0 to 8, not 9"),
    # It read "style layer weights weights must not all be zero".
    ("gatys", {"style_layer_weights": "0 0 0 0 0"}, "style layer weights must not all be zero"),
])
def test_out_of_range_numbers_are_refused_before_the_work(handlers, uploads, tab, values, message):
    from convscope.style.config import StyleConfig
    from convscope.vis.configs import InvertConfig, TextureConfig
    from convscope.web import forms

    h, inside = handlers
    image = record(uploads / "photo.png")
    runs = {
        "gatys": lambda: h.stylize("gatys", image, image, None, "", form(
            StyleConfig, forms.GATYS_MAIN + forms.GATYS_MORE, size=32, iterations=2, **values), {}),
        "texture": lambda: h.texture(image, form(TextureConfig, forms.TEXTURE_MAIN + forms.TEXTURE_MORE,
                                                 size="32 32", source_size=32, iterations=2, **values)),
        "invert": lambda: inside.invert(image, form(InvertConfig, inside.invert_specs + forms.INVERT_MORE,
                                                    size=32, **{"iterations": 2, **values})),
    }
    outputs = []
    with pytest.raises(ConfigError) as err:
        for out in runs[tab]():
            outputs.append(out)
    assert str(err.value).startswith(message), str(err.value)
    _one_line_in_form_terms(str(err.value))
    assert outputs == []  # refused with the form, before the job starts


def test_style_config_ranges_include_zero_where_zero_is_allowed():
    from convscope.style.config import StyleConfig

    StyleConfig(save_every=0, scales=0).validate()
    with pytest.raises(ConfigError, match="--save-every must be a whole number from 0 to 1000000, not 2000000"):
        StyleConfig(save_every=2_000_000).validate()  # (it said "from 1 to 1000000")


def test_engines_take_no_step_size_beyond_float32():
    from convscope.optimize import optimize_image
    from convscope.style.config import StyleConfig
    from convscope.vis.configs import InvertConfig, TextureConfig

    for config in (StyleConfig(lr=1e308), TextureConfig(lr=1e39), InvertConfig(lr=2e6)):
        with pytest.raises(ConfigError, match="--lr must be at most 1e\\+06"):
            config.validate()
    import torch

    with pytest.raises(ConfigError, match="learning rate must be positive and at most 1e\\+06, not 1e\\+308"):
        optimize_image(torch.zeros(1, 3, 4, 4), lambda x: {"loss": x.sum()}, iterations=1, lr=1e308)


@pytest.mark.parametrize("tab, values, hint", [
    # Explain's form has a "net" field, so the CLI's hint became "convscope layers net efficientnet_lite0".
    ("explain", {"layer": "fc7"}, "the layer boxes of See inside list the layers of efficientnet_lite0"),
    ("explain", {"cam_layer": "fc7"}, "the layer boxes of See inside list the layers of efficientnet_lite0"),
    ("dream", {"layer": "fc7"}, "the layer boxes of See inside list the layers of vgg19"),
    ("texture", {"layers": "relu1_1 fc7"}, "the layer boxes of See inside list the layers of vgg19"),
    ("gatys", {"style_layers": "relu1_1 fc7"}, "the layer boxes of See inside list the layers of vgg19"),
    ("activations", {"layer": "fc7"}, "the layer box suggests them"),
])
def test_unknown_layers_point_to_the_pages_layer_lists_not_the_cli(handlers, uploads, tab, values, hint):
    from convscope.style.config import StyleConfig
    from convscope.vis.configs import ActivationsConfig, DreamConfig, ExplainConfig, TextureConfig
    from convscope.web import forms

    h, inside = handlers
    image = record(uploads / "photo.png")
    runs = {
        "explain": lambda: h.explain(image, form(ExplainConfig, h.explain_specs + forms.EXPLAIN_MORE, size=32,
                                                 **values)),
        "dream": lambda: h.dream(image, form(DreamConfig, forms.DREAM_MAIN + forms.DREAM_MORE, size=32, steps=1,
                                             **values)),
        "texture": lambda: h.texture(image, form(TextureConfig, forms.TEXTURE_MAIN + forms.TEXTURE_MORE,
                                                 size="32 32", source_size=32, iterations=1, **values)),
        "gatys": lambda: h.stylize("gatys", image, image, None, "", form(
            StyleConfig, forms.GATYS_MAIN + forms.GATYS_MORE, size=32, iterations=1, **values), {}),
        "activations": lambda: inside.activations(image, form(
            ActivationsConfig, inside.activations_specs + forms.ACTIVATIONS_MORE, size=32, **values)),
    }
    with pytest.raises(ConfigError) as err:
        list(runs[tab]())
    text = str(err.value)
    assert text.startswith("unknown layer 'fc7' for net ") and text.endswith("; " + hint), text
    _one_line_in_form_terms(text)


def _run_folder(folder, classes=("cat", "dog"), **config) -> None:
    """A classifier run's config.json (what find_runs offers), without weights unless trained."""
    from convscope.classify.config import TrainConfig

    saved = TrainConfig(model="simple", input_size=16, epochs=1, device="cpu").resolved().to_dict()
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"kind": "convscope-classifier", "config": {**saved, **config},
                                                    "classes": list(classes)}))


def test_a_damaged_run_is_named_by_its_label_and_the_log_says_why(uploads, tmp_path, capsys):
    # A run folder damaged after the server found it showed the server's path and the CLI's advice
    # ("/srv/runs/cifar holds no trained model yet ...; train it first: convscope classify train -o
    # /srv/runs/cifar --resume"), or, for a config.json edited to an input size of "abc", an
    # internal error (a TypeError traceback in the log).
    runs = tmp_path / "runs"
    _run_folder(runs / "untrained")
    _run_folder(runs / "edited", input_size="abc")
    h, inside = _handlers(uploads, runs)
    try:
        assert set(h.runs) == {"run: untrained", "run: edited"}
        for label in h.runs:
            for action in (lambda: h.classify([record(uploads / "photo.png")], label),
                           lambda: inside.layer_choices(label)):
                with pytest.raises(ConfigError) as err:
                    action()
                text = str(err.value)
                assert text.startswith(f"{label} cannot be loaded: its files on this server are damaged"), text
                assert str(tmp_path) not in text and "convscope" not in text and "\n" not in text, text
        log = capsys.readouterr().err
        assert f"run: untrained ({runs / 'untrained'}) cannot be loaded: {runs / 'untrained'} holds no trained " \
               "model yet" in log
        assert f"{runs / 'edited' / 'config.json'} is damaged: --input-size must be a whole number from 8 to " \
               "1024, not 'abc'" in log
        assert "Traceback" not in log
    finally:
        h.cleanup()


@pytest.mark.parametrize("config, message", [
    ({"input_size": "abc"}, "--input-size must be a whole number from 8 to 1024, not 'abc'"),
    ({"input_size": 100_000}, "--input-size must be a whole number from 8 to 1024, not 100000"),  # 80 TB of weights
    ({"hidden": "x"}, "--hidden must be a list of positive whole numbers such as (512, 256), not 'x'"),
    ({"dropout": 7}, "--dropout must be a number at least 0 and at most 0.95, not 7"),
])
def test_predict_with_an_edited_run_config_is_a_one_line_error(tmp_path, uploads, capsys, config, message):
    from convscope.cli import main

    _run_folder(tmp_path / "run", **config)
    assert main(["classify", "predict", str(tmp_path / "run"), str(uploads / "photo.png")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"convscope: error: {tmp_path / 'run' / 'config.json'} is damaged: {message}"

"""The web UI (`convscope serve`): upload limits, form <-> config, jobs (cancel, errors), the serve
command, and the real page in headless Chromium (stylize fast + gatys, classify, cancel, errors,
a screenshot of each tab under test-artifacts/web/)."""

from __future__ import annotations

import os
import re
import socket
import struct
import threading
import time
import zlib
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convscope.cli import main
from convscope.errors import ConfigError, ImageError, UserError
from convscope.optimize import Progress
from convscope.web import jobs
from convscope.web.limits import Limits, check_upload, probe_upload, upload_path
from convscope.web.widgets import Spec, build_config, parse_value

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("CONVSCOPE_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))


def photo(w=80, h=60, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / 9.0
    a = np.stack([np.sin(x + c) * np.cos(y - c) for c in (0.0, 1.0, 2.0)], -1) * 0.35 + 0.5
    return Image.fromarray(((a + rng.normal(0, 0.03, a.shape)).clip(0, 1) * 255).astype(np.uint8))


def record(path: Path, name: str | None = None) -> dict:
    """What Gradio hands a handler for an uploaded file."""
    return {"path": str(path), "orig_name": name or path.name, "meta": {"_type": "gradio.FileData"}}


# ---- limits ------------------------------------------------------------------------------------
@pytest.fixture
def uploads(tmp_path):
    root = tmp_path / "uploads"
    root.mkdir()
    return root


def test_upload_accepted_as_rgb(uploads):
    path = uploads / "x.png"
    photo().convert("RGBA").save(path)
    img = check_upload(record(path, "holiday.png"), Limits(upload_root=uploads))
    assert img.mode == "RGB" and img.size == (80, 60)


def test_upload_over_the_byte_cap_names_the_clients_file(uploads):
    path = uploads / "tmp123.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(path)
    with pytest.raises(ImageError, match=r"holiday\.png is 0\.1\d* MB, over the upload limit of 0\.05 MB"):
        check_upload(record(path, "holiday.png"), Limits(max_bytes=2**20 // 20, upload_root=uploads))


def test_upload_over_the_pixel_cap(uploads):
    path = uploads / "tmp9.png"
    Image.new("RGB", (300, 200)).save(path)
    with pytest.raises(ImageError) as err:
        check_upload(record(path, "wide.png"), Limits(max_pixels=50_000, upload_root=uploads))
    assert "wide.png is 300x200 = 60,000 pixels, over the limit of 50,000" in str(err.value)
    assert str(uploads) not in str(err.value)  # the server's paths never reach the page


@pytest.mark.parametrize("side", [12_000, 30_000])  # over PIL's warning limit; over its hard limit
def test_upload_claiming_a_huge_size_says_too_large(uploads, side, recwarn):
    # 30000x30000 was reported as "is not an image" (PIL's DecompressionBombError caught as any
    # error), and 12000x12000 printed PIL's DecompressionBombWarning on the server's stderr.
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path = uploads / "up.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    with pytest.raises(ImageError, match=r"image too large: huge\.png .*over the limit"):
        check_upload(record(path, "huge.png"), Limits(upload_root=uploads))
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_upload_with_damaged_exif_is_used_without_a_warning(uploads):
    # PIL's "Corrupt EXIF data" UserWarning went to the server's log, never the page; the image
    # decodes, with the tags read before the damage (Orientation 6 here: stored 4x2, shown 2x4).
    import warnings

    tags = struct.pack("<H", 2) + struct.pack("<HHLHH", 0x0112, 3, 1, 6, 0) + b"\0" * 6
    path = uploads / "phone.jpg"
    Image.new("RGB", (4, 2), (0, 0, 255)).save(path, quality=100,
                                               exif=b"Exif\0\0II*\0" + struct.pack("<I", 8) + tags)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img = check_upload(record(path), Limits(upload_root=uploads))
    assert img.size == (2, 4) and [str(w.message) for w in caught] == []


@pytest.mark.parametrize("content, fmt, message", [
    (b"hello, not an image", None, "is not an image"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", None, "is not an image"),
    (None, "ICO", "is in ICO format; upload a PNG, JPEG, WebP, BMP, GIF, TIFF, AVIF file"),
])
def test_upload_must_be_an_accepted_image_type(uploads, content, fmt, message):
    path = uploads / "upload.png"
    if content is not None:
        path.write_bytes(content)
    else:
        Image.new("RGB", (32, 32)).save(path, format=fmt)
    with pytest.raises(ImageError, match=message):
        check_upload(record(path, "x.png"), Limits(upload_root=uploads))


def test_client_given_paths_are_refused(uploads, tmp_path):
    limits = Limits(upload_root=uploads)
    outside = tmp_path / "secret.png"
    photo().save(outside)
    with pytest.raises(ImageError, match="paths and URLs are not accepted"):
        upload_path(str(outside), limits)                                  # a bare path string
    with pytest.raises(ImageError, match="paths and URLs are not accepted"):
        upload_path({"url": "data:image/png;base64,AAAA", "path": None}, limits)
    with pytest.raises(ImageError, match="was not uploaded to this server"):
        upload_path(record(outside), limits)                               # outside the upload folder
    with pytest.raises(ImageError, match="was not uploaded to this server"):
        upload_path(record(uploads / ".." / "secret.png"), limits)         # climbing out
    link = uploads / "link.png"
    link.symlink_to(outside)
    with pytest.raises(ImageError, match="was not uploaded to this server"):
        upload_path(record(link), limits)                                  # a link pointing out
    with pytest.raises(ImageError, match="no image: upload one"):
        upload_path(None, limits)


@pytest.mark.parametrize("root", [True, False])
def test_a_path_with_a_nul_byte_is_refused(uploads, root):
    # os.path.realpath (and open) raise ValueError on it: an internal error on the page.
    path = uploads / "x.png"
    photo().save(path)
    with pytest.raises(ImageError, match="paths and URLs are not accepted"):
        check_upload(record(Path(str(path) + "\0.png")), Limits(upload_root=uploads if root else None))


def test_requested_sizes_are_capped_too():
    Limits(max_pixels=10_000).check_output((40, 10), 200)  # 200x50
    with pytest.raises(ConfigError, match=r"size 201 makes a 201x50 image, over this server's limit of "
                                          r"10,000 pixels; use at most 200"):
        Limits(max_pixels=10_000).check_output((40, 10), 201)
    with pytest.raises(ConfigError):
        Limits(max_bytes=0)


# ---- form <-> config -----------------------------------------------------------------------------
def test_parse_values():
    from convscope.style.config import StyleConfig
    from convscope.vis.explain import ExplainConfig
    from convscope.vis.texture import TextureConfig

    assert parse_value(StyleConfig, "iterations", 12.0) == 12
    assert parse_value(StyleConfig, "style_blend", "0.7, 0.3") == (0.7, 0.3)
    assert parse_value(StyleConfig, "style_blend", "  ") is None
    assert parse_value(StyleConfig, "lr", None) is None
    assert parse_value(TextureConfig, "size", "96 64") == (96, 64)
    assert parse_value(ExplainConfig, Spec("rules", choices=("guided", "deconvnet", "gradient")),
                       ["deconvnet", "guided"]) == ("guided", "deconvnet")
    for spec, raw, message in [
        ("iterations", 2.5, "whole number"), ("iterations", "many", "must be a number"),
        ("iterations", None, "needs a number"), ("content_weight", float("nan"), "finite"),
        ("preserve_color", "sepia", "must be one of none, luminance, histogram"),
        (Spec("init", choices=("content", "noise", "style")), "/etc/passwd", "must be one of content"),
        ("cuda_graph", "yes", "true or false"), ("style_layers", ["a"], "must be text"),
        ("style_layers", "x" * 500, "too long"),
        # (it printed the 309 digits of int(1e308))
        ("iterations", 1e308, r"^iterations must be a whole number below 2\*\*63, not '1e\+308'$"),
        ("seed", "1" * 300, r"^seed must be a whole number below 2\*\*63, not '1{40}'$"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_value(StyleConfig, spec, raw)
    for raw in ("64", "", " , "):  # (empty said "needs at least one value")
        with pytest.raises(ConfigError, match="^size needs 2 values"):
            parse_value(TextureConfig, "size", raw)
    with pytest.raises(ConfigError, match="^layers needs at least one value$"):
        parse_value(TextureConfig, "layers", " ")
    with pytest.raises(ValueError):  # a page may narrow a field's choices, never add to them
        parse_value(StyleConfig, Spec("pooling", choices=("max", "median")), "max")


def test_widgets_take_defaults_help_and_choices_from_the_configs():
    pytest.importorskip("gradio")
    from convscope.fast.apply import FastConfig
    from convscope.style.config import StyleConfig
    from convscope.vis.configs import ActivationsConfig, ClassVizConfig, FeatureVizConfig, InvertConfig
    from convscope.vis.dream import DreamConfig
    from convscope.vis.explain import ExplainConfig
    from convscope.vis.texture import TextureConfig
    from convscope.web import forms
    from convscope.web.widgets import make_widget

    shown = [(StyleConfig, forms.GATYS_MAIN + forms.GATYS_MORE + [forms.BLEND]), (FastConfig, forms.FAST),
             (ExplainConfig, forms.EXPLAIN_MAIN + forms.EXPLAIN_MORE),
             (DreamConfig, forms.DREAM_MAIN + forms.DREAM_MORE),
             (TextureConfig, forms.TEXTURE_MAIN + forms.TEXTURE_MORE),
             (ActivationsConfig, forms.ACTIVATIONS_MAIN + forms.ACTIVATIONS_MORE),
             (FeatureVizConfig, forms.FEATUREVIZ_MAIN + forms.FEATUREVIZ_MORE),
             (ClassVizConfig, forms.CLASSVIZ_MAIN + forms.CLASSVIZ_MORE),
             (InvertConfig, forms.INVERT_MAIN + forms.INVERT_MORE)]
    for cls, specs in shown:
        defaults = {f.name: f for f in fields(cls)}
        raw = {}
        for spec in specs:
            name = spec if isinstance(spec, str) else spec.name
            w = make_widget(cls, spec)
            own = spec.help if isinstance(spec, Spec) and spec.help else defaults[name].metadata["help"]
            assert w.info.startswith(own), name  # the field's help, or the form's where it narrows the choices
            raw[name] = w.value
            if defaults[name].metadata.get("choices") and not isinstance(spec, Spec):
                assert [c[1] for c in w.choices] == list(defaults[name].metadata["choices"]), name
        # The form's untouched values give exactly the engine's defaults.
        assert build_config(cls, specs, raw) == cls(), cls.__name__


def test_optional_numbers_start_empty_not_as_zero():
    # Gradio's Number shows an empty value as 0 and a whole-number one sends 0 back: DeepDream
    # amplified channel 0 instead of the whole layer, and opening Explain's channel box turned the
    # top class's explanation into channel 0's (and a typed class then failed).
    gr = pytest.importorskip("gradio")
    from convscope.style.config import StyleConfig
    from convscope.vis.dream import DreamConfig
    from convscope.vis.explain import ExplainConfig
    from convscope.vis.texture import TextureConfig
    from convscope.web.widgets import make_widget

    for cls, name, typed, value in [(DreamConfig, "channel", "7", 7), (ExplainConfig, "channel", " 12 ", 12),
                                    (StyleConfig, "lr", "0.5", 0.5), (TextureConfig, "lr", "2", 2.0)]:
        w = make_widget(cls, name)
        assert not isinstance(w, gr.Number) and w.value == "", (cls.__name__, name)
        assert parse_value(cls, name, w.value) is None           # untouched: the engine's default
        assert parse_value(cls, name, typed) == value
    with pytest.raises(ConfigError, match="channel must be a whole number"):
        parse_value(DreamConfig, "channel", "1.5")


def test_help_texts_describe_only_the_choices_the_page_offers():
    # The init and net fields' help (from the configs) offered an image file, fast:MODEL and any
    # torchvision classifier: choices the page narrows away.
    pytest.importorskip("gradio")
    from convscope.style.config import StyleConfig
    from convscope.vis.explain import ExplainConfig
    from convscope.web import forms
    from convscope.web.widgets import make_widget

    init = make_widget(StyleConfig, next(s for s in forms.GATYS_MORE if getattr(s, "name", s) == "init"))
    net = make_widget(ExplainConfig, next(s for s in forms.EXPLAIN_MAIN if getattr(s, "name", s) == "net"))
    assert "image file" not in init.info and "fast:MODEL" not in init.info and "fast" in init.info
    assert "torchvision" not in net.info and "vgg19" in net.info


def test_help_texts_name_the_forms_fields_not_cli_flags():
    pytest.importorskip("gradio")
    from convscope.vis.dream import DreamConfig
    from convscope.vis.texture import TextureConfig
    from convscope.web import forms
    from convscope.web.widgets import make_widget

    assert "--layer" in DreamConfig.__dataclass_fields__["channel"].metadata["help"]
    info = make_widget(DreamConfig, "channel", labels=forms.DREAM_LABELS).info
    assert "channel of layer" in info and "--" not in info
    info = make_widget(TextureConfig, "warmup", labels=forms.TEXTURE_LABELS).info
    assert "counted in iterations" in info and "--" not in info


# ---- jobs ----------------------------------------------------------------------------------------
def _progress(i, n=1000, image=None):
    return Progress(i, n, 1.0 / i, {"loss": 1.0 / i}, 0.01 * i, image=image)


def test_closing_the_stream_cancels_the_engine(monkeypatch):
    seen = {}
    freed = []
    monkeypatch.setattr(jobs, "free_memory", lambda: freed.append(1))

    def work(job):
        try:
            for i in range(1, 100_000):
                job.callback(_progress(i, image=None if i % 5 else np.zeros(1)))
                time.sleep(0.002)
        except jobs.Cancelled:
            seen["cancelled_at"] = i
            raise

    slots = jobs.DeviceSlots(1)
    gen = jobs.stream(work, slots, interval=0.05)
    tick = next(gen)
    assert isinstance(tick, jobs.Tick) and 0 < tick.done < 1 and tick.eta is not None
    gen.close()  # what Gradio does on Cancel
    deadline = time.monotonic() + 5
    while "cancelled_at" not in seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "cancelled_at" in seen
    assert slots._sem.acquire(timeout=5)  # the device slot was given back
    assert freed == [1]                   # and the job's memory released


def test_stream_results_and_errors(monkeypatch):
    freed = []
    monkeypatch.setattr(jobs, "free_memory", lambda: freed.append(1))
    gen = jobs.stream(lambda job: 42, jobs.DeviceSlots(1))
    assert list(gen) == [("result", 42)]

    def fail(job):
        job.callback(_progress(1, 2))
        raise ImageError("bad image")

    with pytest.raises(ImageError, match="bad image"):
        list(jobs.stream(fail, jobs.DeviceSlots(1)))
    assert freed == [1, 1]  # after success and after failure


def test_the_page_shows_failures_in_one_line(capsys):
    gr = pytest.importorskip("gradio")
    from convscope.web.app import _shown_errors

    def job(exc):
        yield ("preview", "running", None)
        raise exc

    for exc, message in [(ImageError("x.png is not an image"), "x.png is not an image"),
                         (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"),
                          "the device ran out of memory; use a smaller size"),
                         (KeyError("boom"), "internal error (KeyError); the server log has the details")]:
        gen = _shown_errors((1, 3))(job)(exc)
        assert next(gen) == ("preview", "running", None)
        shown = next(gen)
        assert shown[1] == f"**error:** {message}"
        with pytest.raises(gr.Error) as err:
            next(gen)
        assert err.value.message == message
    logged = capsys.readouterr().err
    assert "KeyError: 'boom'" in logged and "ImageError" not in logged  # only the unexpected is logged


def test_device_slots_bound_concurrent_jobs():
    slots = jobs.DeviceSlots(1)
    running, most = [0], [0]
    lock = threading.Lock()

    def work(job):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return 1

    threads = [threading.Thread(target=lambda: list(jobs.stream(work, slots))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert most[0] == 1


# ---- handlers (no browser) -------------------------------------------------------------------------
@pytest.fixture
def handlers(uploads):
    from convscope.web.handlers import Handlers, Settings

    h = Handlers(Settings(limits=Limits(upload_root=uploads), device="cpu"))
    yield h
    h.cleanup()
    assert not h.tmp.exists()


def test_each_job_gets_its_own_copy_of_a_loaded_net(handlers):
    # Jobs shared one loaded net: with --concurrency above 1, one job's hooks ran in the other's
    # forward pass, and featureviz switched the shared net to channels-last.
    import torch

    a, b = handlers.net("efficientnet_lite0"), handlers.net("efficientnet_lite0")
    assert a is not b and len(handlers._nets) == 1  # loaded once
    pa, pb = next(a.parameters()), next(b.parameters())
    assert torch.equal(pa, pb) and pa.data_ptr() != pb.data_ptr()
    seen = []
    a.model.stem.register_forward_hook(lambda *args: seen.append(1))
    b.features(torch.rand(1, 3, 32, 32), ["logits"])
    assert seen == []  # a's hook is a's alone


def test_builtin_samples_keep_their_names(handlers):
    # Handed to the page as PIL images they came back as "image.png": in messages and in the
    # inputs the result's metadata records.
    from convscope.web.limits import display_name

    for path, name, size in [(handlers.builtin_photo(), "grace_hopper.jpg", (512, 600)),
                             (handlers.builtin_style(), "swirl_painting.png", (512, 512))]:
        rec = record(Path(path))
        assert display_name(rec) == name and Path(path).parent == handlers.tmp
        assert check_upload(rec, Limits()).size == size


def test_stylize_shows_only_the_parts_a_method_uses():
    # A built-in style showed the style uploads, alpha and style size; arbitrary showed strength.
    pytest.importorskip("gradio")
    from convscope.web.app import stylize_parts_shown

    # gatys box, one-pass box, style, built-in style button, second style, strength, alpha, style size,
    # Stop (a one-pass job has nothing to stop early)
    assert stylize_parts_shown("gatys") == (True, False, True, True, True, False, False, False, True)
    assert stylize_parts_shown("arbitrary") == (False, True, True, True, True, False, True, True, False)
    assert stylize_parts_shown("model:starry_night") == (False, True, False, False, False, True, False, False,
                                                         False)


def test_the_page_shows_progress_and_errors_on_the_result_not_the_status_line():
    # On every output Gradio's "Error" badge covered the middle of the one-line message in the
    # status line. And no help text on the page names a CLI flag (the classify model's named --runs).
    gr = pytest.importorskip("gradio")
    from convscope.web.app import build_app, stylize_parts_shown
    from convscope.web.handlers import Settings

    demo = build_app(Settings(limits=Limits(), device="cpu"))
    try:
        events = {fn.api_name: fn for fn in demo.fns.values() if fn.api_name}
        method_change = [fn for fn in demo.fns.values() if len(fn.inputs) == 1 and
                         getattr(fn.inputs[0], "elem_id", None) == "stylize-method"]
        assert len(method_change) == 1 and len(method_change[0].outputs) == len(stylize_parts_shown("gatys"))
        for name in ("stylize", "classify", "explain", "dream", "texture", "activations", "featureviz", "classviz",
                     "invert"):
            shown_on = events[name].show_progress_on
            assert shown_on and all(isinstance(c, gr.Image) for c in shown_on), name
        for form in ("activations", "featureviz", "invert"):  # a new net: its layers suggested, from auto
            follow = [fn for fn in demo.fns.values() if [getattr(c, "elem_id", None) for c in fn.inputs] ==
                      [f"{form}-net"] and [c.elem_id for c in fn.outputs] == [f"{form}-layer"]]
            assert len(follow) == 1, form
            update = follow[0].fn("vgg19")
            assert update["value"] == "auto" and "relu3_1" in update["choices"]
            assert ("all-conv" in update["choices"]) == (form == "activations")
        infos = [b.info for b in demo.blocks.values() if getattr(b, "info", None)]
        assert infos and not [i for i in infos if "--" in i]
    finally:
        demo.convscope_handlers.cleanup()


def test_handlers_refuse_unknown_choices(handlers, uploads):
    path = uploads / "c.png"
    photo().save(path)
    with pytest.raises(ConfigError, match="unknown method"):
        next(handlers.stylize("../../x", record(path), record(path), None, "", {}, {}))
    with pytest.raises(ConfigError, match="unknown model"):
        handlers.classify([record(path)], "/tmp/some/run")
    with pytest.raises(ConfigError, match="upload a style image"):
        next(handlers.stylize("gatys", record(path), None, None, "", {}, {}))


@pytest.mark.parametrize("choice", [["efficientnet_lite0"], {"a": 1}, None, 3])
def test_handlers_refuse_choices_of_any_json_type(handlers, uploads, choice):
    # A client's JSON list or object as the model was an unhashable-type TypeError (an internal error).
    path = uploads / "c.png"
    photo().save(path)
    with pytest.raises(ConfigError, match="unknown model"):
        handlers.classify([record(path)], choice)
    with pytest.raises(ConfigError, match="unknown method"):
        next(handlers.stylize(choice, record(path), record(path), None, "", {}, {}))


def test_classify_upload_gone_after_its_check_is_named_by_the_clients_name(handlers, uploads, monkeypatch):
    # The uploads are checked from their headers, then decoded one at a time in the job: a file gone
    # in between is named as the user knows it (the server's path reached the page before).
    from convscope.web import handlers as module

    path = uploads / "c.png"
    photo().save(path)

    def probe_then_delete(r, limits, what="image"):
        checked = probe_upload(r, limits, what)
        Path(r["path"]).unlink()
        return checked

    monkeypatch.setattr(module, "probe_upload", probe_then_delete)
    with pytest.raises(UserError) as err:
        handlers.classify([record(path, "mine.png")], "efficientnet_lite0")
    message = str(err.value)
    assert "mine.png" in message and str(uploads) not in message and len(message.splitlines()) == 1


def test_classify_decodes_one_upload_at_a_time(handlers, uploads, monkeypatch):
    # All uploads were decoded before the job and held to the end (16 at the 50-megapixel cap:
    # 2.4 GB), and the chart drew them at full size; more than 8 failed as an internal error (the
    # chart was handed None for the images after the 8th).
    import weakref

    from convscope.web import handlers as module
    from convscope.web.handlers import MAX_CLASSIFY

    paths = []
    for i in range(MAX_CLASSIFY):
        paths.append(uploads / f"{i}.png")
        photo(80 + i, 60, seed=i).save(paths[-1])
    alive = []

    def decode(r, limits, what="image"):
        assert not [ref for ref in alive if ref() is not None], "an earlier upload is still decoded"
        image = check_upload(r, limits, what)
        alive.append(weakref.ref(image))
        return image

    monkeypatch.setattr(module, "check_upload", decode)
    top, chart, table = handlers.classify([record(p, f"mine{i}.png") for i, p in enumerate(paths)],
                                          "efficientnet_lite0")
    assert len(alive) == MAX_CLASSIFY and len(top) == 5 and table.count("| mine") == MAX_CLASSIFY
    assert chart.height > 100 * MAX_CLASSIFY  # a row per image

    # Every upload is checked before any is decoded: a bad last file costs no work.
    (uploads / "notes.png").write_text("not an image")
    alive.clear()
    with pytest.raises(ImageError, match="notes.png is not an image"):
        handlers.classify([record(paths[0]), record(uploads / "notes.png")], "efficientnet_lite0")
    assert alive == []


def test_classify_a_one_pixel_high_image_resizes_only_the_crop(handlers, uploads, monkeypatch):
    # _square resized the whole image before cropping: 4000x1 became 896000x224 (20000x1, a
    # 143-byte file, took 4.4 GB and 24 s; 100000x1 is within the pixel cap and needs 22 GB).
    path = uploads / "line.png"
    Image.new("RGB", (4000, 1), (20, 200, 20)).save(path)
    resize = Image.Image.resize
    asked = []

    def bounded(im, size, *args, **kwargs):
        asked.append(size)
        assert size[0] * size[1] <= 1024 * 1024, f"resize to {size}"
        return resize(im, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", bounded)
    top, _, _ = handlers.classify([record(path)], "efficientnet_lite0")
    assert len(top) == 5 and (224, 224) in asked


def test_style_images_are_capped_like_the_output(uploads):
    # The style image is resized to size x style scale (gatys) or to style size (arbitrary): only
    # the content was checked, so style scale 16 at size 512 ran VGG on an 8192x8192 style image.
    pytest.importorskip("gradio")
    from convscope.fast.apply import FastConfig
    from convscope.style.config import StyleConfig
    from convscope.web import forms
    from convscope.web.handlers import Handlers, Settings

    content, style = uploads / "c.png", uploads / "s.png"
    photo(80, 60).save(content)
    photo(48, 48).save(style)
    h = Handlers(Settings(limits=Limits(max_pixels=10_000, upload_root=uploads), device="cpu"))
    try:
        gatys = _form(StyleConfig, forms.GATYS_MAIN + forms.GATYS_MORE, size=64, iterations=1, style_scale=2)
        with pytest.raises(ConfigError, match=r"style size \(size x style scale\) 128 makes a 128x128 image"):
            next(h.stylize("gatys", record(content), record(style), None, "", gatys, {}))
        fast = _form(FastConfig, forms.FAST, style_size=128)
        with pytest.raises(ConfigError, match="style size 128 makes a 128x128 image"):
            next(h.stylize("arbitrary", record(content), record(style), None, "", {}, fast))
    finally:
        h.cleanup()


@pytest.mark.parametrize("size, style_size, message", [
    # It blamed the content image ("the content image is 1x1") for the size field's value.
    (1, (48, 48), "size 1 makes the content image mine.png 1x1: the arbitrary method needs at least 8 pixels a "
                  "side; use size 10 or more"),
    # A thin style image: a resize error that named no upload.
    (0, (4000, 1), "the style image thin.png (4000x1) is too elongated or small: at style size 512"),
])
def test_arbitrary_names_the_field_or_the_upload_at_fault(handlers, uploads, size, style_size, message):
    pytest.importorskip("gradio")
    from convscope.fast.apply import FastConfig
    from convscope.web import forms

    content, style = uploads / "c.png", uploads / "s.png"
    photo(80, 60).save(content)
    photo(*style_size).save(style)
    fast = _form(FastConfig, forms.FAST, size=size)
    with pytest.raises(ConfigError) as err:
        list(handlers.stylize("arbitrary", record(content, "mine.png"), record(style, "thin.png"), None, "", {}, fast))
    assert str(err.value).startswith(message) and "--" not in str(err.value)


def test_fast_stylize_yields_a_download_with_metadata_and_cleans_up(handlers, uploads):
    from convscope.fast.apply import FastConfig
    from convscope.images import read_png_metadata

    path = uploads / "c.png"
    photo().save(path)
    fast = {f.name: getattr(FastConfig(), f.name) for f in fields(FastConfig)}
    fast.update(alpha=0.3, style_size=256)  # the arbitrary method's sliders, moved, stay unused
    outs = handlers.stylize("model:starry_night", record(path, "mine.png"), None, None, "", {}, fast)
    assert next(outs)[1] == "stylizing..."
    image, status, download = next(outs)
    assert image == download  # the saved PNG serves as the result image too (unique per job)
    assert Image.open(image).size == (80, 60) and status.startswith("done")
    meta = read_png_metadata(download)  # the page copies it while the job's generator waits
    assert meta["config"]["strength"] == 1.0 and meta["inputs"]["content"] == "mine.png"
    assert meta["config"]["device"] == "cpu" and "alpha" not in meta["config"]  # what ran, resolved
    assert list(outs) == []
    assert list(handlers.tmp.iterdir()) == []  # the job's folder is gone once the page has its copy


def _form(cls, specs, **values) -> dict:
    """The values an untouched form sends (the config's defaults), with `values` typed in."""
    from convscope.web.widgets import make_widget

    return {**{(sp if isinstance(sp, str) else sp.name): make_widget(cls, sp).value for sp in specs}, **values}


def test_texture_streams_previews_then_the_result(handlers, uploads):
    pytest.importorskip("gradio")
    from convscope.vis.texture import TextureConfig
    from convscope.web import forms

    path = uploads / "t.png"
    photo(48, 48).save(path)
    form = _form(TextureConfig, forms.TEXTURE_MAIN + forms.TEXTURE_MORE, size="32 24", iterations=6, source_size=48)
    outs = list(handlers.texture(record(path), form))
    previews = [o for o in outs[1:-1] if isinstance(o[0], Image.Image)]
    assert previews and all("iteration" in o[1] and "ETA" in o[1] for o in previews)
    image, status, download = outs[-1]
    assert image.size == (32, 24) and status.startswith("done") and download.endswith("texture.png")


@pytest.mark.parametrize("field, value", [("iterations", 10**12), ("lbfgs_history", 10**12),
                                          ("iterations", 1_000_001), ("lbfgs_history", 1001)])
def test_texture_caps_what_allocations_scale_with(handlers, uploads, field, value):
    # Uncapped (stylize caps both): 10**12 failed in the job allocating TBs, shown as "the device
    # ran out of memory; use a smaller size"; a smaller huge value allocated GBs and ran on.
    pytest.importorskip("gradio")
    from convscope.vis.texture import TextureConfig
    from convscope.web import forms

    path = uploads / "t.png"
    photo(48, 48).save(path)
    form = _form(TextureConfig, forms.TEXTURE_MAIN + forms.TEXTURE_MORE, size="32 24", source_size=48,
                 **{field: value})
    with pytest.raises(ConfigError, match=f"^{field.replace('_', ' ')} must be a whole number from 1 to "):
        list(handlers.texture(record(path), form))


def test_messages_name_form_fields_by_their_labels_not_flags():
    from convscope.web.widgets import in_form_terms, labels_of

    labels = labels_of(["style_weight", Spec("cam_layer", label="Grad-CAM layer")], ["style_weight"])
    assert labels == {"style_weight": "style weight", "cam_layer": "Grad-CAM layer"}
    assert in_form_terms("--style-weight must be a non-negative number, not -1.0; --cam-layer conv1 comes after "
                         "--layer/--cam-layer; --guide stays; so do --style-weights and a--style-weight",
                         labels) == ("style weight must be a non-negative number, not -1.0; Grad-CAM layer conv1 "
                                     "comes after --layer/Grad-CAM layer; --guide stays; so do --style-weights and "
                                     "a--style-weight")
    with pytest.raises(ValueError, match="two labels"):
        labels_of(["size"], [Spec("size", label="long side")])


@pytest.mark.parametrize("tab, field, value, message", [
    ("stylize", "style_weight", -1, "style weight must be a non-negative number, not -1"),
    ("stylize", "size", 16, "size 16 is too small (at least 32 px: VGG pools five times)"),
    ("fast", "alpha", 2, "alpha must be between 0 and 1, not 2"),
    ("explain", "alpha", 2, "alpha must be a number from 0 to 1, not 2"),
    ("dream", "octave_scale", 0.5, "octave scale must be"),
    ("texture", "tv_weight", -1, "tv weight must be"),
])
def test_the_page_names_form_fields_where_the_engines_name_flags(handlers, uploads, tab, field, value, message):
    # The engines' checks say "--style-weight must be ...": a web user fills fields, not flags.
    pytest.importorskip("gradio")
    from convscope.fast.apply import FastConfig
    from convscope.style.config import StyleConfig
    from convscope.vis.dream import DreamConfig
    from convscope.vis.explain import ExplainConfig
    from convscope.vis.texture import TextureConfig
    from convscope.web import forms

    path = uploads / "c.png"
    photo().save(path)
    image = record(path)
    runs = {
        "stylize": lambda: handlers.stylize("gatys", image, image, None, "", _form(
            StyleConfig, forms.GATYS_MAIN + forms.GATYS_MORE, **{field: value}), {}),
        "fast": lambda: handlers.stylize("arbitrary", image, image, None, "", {}, _form(
            FastConfig, forms.FAST, **{field: value})),
        "explain": lambda: handlers.explain(image, _form(ExplainConfig, forms.EXPLAIN_MAIN + forms.EXPLAIN_MORE,
                                                         **{field: value})),
        "dream": lambda: handlers.dream(image, _form(DreamConfig, forms.DREAM_MAIN + forms.DREAM_MORE,
                                                     **{field: value})),
        "texture": lambda: handlers.texture(image, _form(TextureConfig, forms.TEXTURE_MAIN + forms.TEXTURE_MORE,
                                                         **{field: value})),
    }
    with pytest.raises(ConfigError) as err:
        list(runs[tab]())
    assert str(err.value).startswith(message) and "--" not in str(err.value)


def test_stop_ends_the_running_job_with_its_best_image(monkeypatch):
    # The engines take Stop as Ctrl-C: their Interrupted (with the image so far) reaches the page.
    import torch

    from convscope.optimize import Interrupted

    monkeypatch.setattr(jobs, "free_memory", lambda: None)

    def work(job):
        try:
            for i in range(1, 100_000):
                job.callback(_progress(i))
                time.sleep(0.002)
        except KeyboardInterrupt:
            raise Interrupted(torch.full((1, 3, 2, 2), 0.5), i) from None

    switch = jobs.StopSwitch()
    assert not switch.press()  # nothing running: nothing to stop, and no stop left for the next job
    gen = jobs.stream(work, jobs.DeviceSlots(1), interval=0.05, switch=switch)
    assert isinstance(next(gen), jobs.Tick)
    assert switch.press()
    with pytest.raises(Interrupted) as stop:
        list(gen)
    assert stop.value.iteration > 0 and stop.value.best_image.shape == (1, 3, 2, 2)
    assert not switch.press()  # the job detached itself when it ended
    assert list(jobs.stream(lambda job: job.callback(_progress(1)) or 7, jobs.DeviceSlots(1),
                            switch=switch))[-1] == ("result", 7)


def test_stop_before_the_engine_reports_is_a_cancel(monkeypatch):
    monkeypatch.setattr(jobs, "free_memory", lambda: None)
    switch = jobs.StopSwitch()
    started = threading.Event()

    def work(job):
        started.set()
        time.sleep(0.2)      # loading the network: no report yet
        job.callback(_progress(1))

    gen = jobs.stream(work, jobs.DeviceSlots(1), switch=switch)
    thread = threading.Thread(target=lambda: (started.wait(5), switch.press()))
    thread.start()
    with pytest.raises(jobs.Cancelled, match="nothing to keep"):
        list(gen)
    thread.join()

    # Stopped while waiting for the device (behind another job): ends at its first check, saying so.
    slots = jobs.DeviceSlots(1)
    slots.__enter__()
    gen = jobs.stream(lambda job: 7, slots, interval=0.05, switch=switch)
    holder = threading.Thread(target=lambda: (time.sleep(0.2), switch.press(), time.sleep(0.1), slots.__exit__()))
    holder.start()
    with pytest.raises(jobs.Cancelled, match="stopped before it started"):
        list(gen)
    holder.join()


def test_stop_while_the_job_waits_in_the_queue_ends_it_before_it_starts(monkeypatch):
    from convscope.optimize import Interrupted

    # The page marks the switch as Gradio queues the tab's job (the event's validator): a Stop
    # pressed while the job waits (with --concurrency 1, behind another) used to find nothing
    # attached and do nothing, and the job then ran to its end.
    monkeypatch.setattr(jobs, "free_memory", lambda: None)
    switch = jobs.StopSwitch()
    ran = []

    def handler(work=lambda job: ran.append(1) or 7, before=()):
        """What the page runs when the job leaves Gradio's queue (`before`: yields while the
        handler reads the form, before its engine starts)."""
        with switch.running():
            yield from before
            yield from jobs.stream(work, jobs.DeviceSlots(1), interval=0.05, switch=switch)

    assert not switch.press()  # nothing queued or running: dropped, not kept for a later job
    switch.submit()
    assert switch.press() == "queued"
    with pytest.raises(jobs.Cancelled, match="stopped before it started: nothing to keep"):
        list(handler())
    assert ran == [] and switch.press() is None  # it never ran; the switch let go of it

    # The next job is not stopped by the last one's Stop, nor by a press with nothing queued.
    switch.submit()
    assert list(handler()) == [("result", 7)] and ran == [1]
    assert switch.press() is None
    switch.submit()
    assert list(handler()) == [("result", 7)] and ran == [1, 1]

    # Pressed as the job leaves the queue, while the handler reads its form: the job has left the
    # queue (so not "queued"), and its engine ends at its first check, before it starts.
    switch.submit()
    outs = handler(before=["reading the form"])
    assert next(outs) == "reading the form"
    assert switch.press() == "running"
    with pytest.raises(jobs.Cancelled, match="stopped before it started"):
        list(outs)
    assert ran == [1, 1]

    # A one-pass method (a built-in fast style) takes no Stop: a press is not acknowledged, and the
    # job runs to its end.
    def one_pass():
        switch.one_pass()
        yield "one pass"

    switch.submit()
    outs = handler(before=one_pass())
    assert next(outs) == "one pass"
    assert switch.press() is None
    assert list(outs) == [("result", 7)] and ran == [1, 1, 1]

    # A job that ends before its engine starts (a form error) or is cancelled while it waits leaves
    # nothing for a later press to stop.
    def form_error():
        raise ConfigError("bad size")
        yield

    switch.submit()
    with pytest.raises(ConfigError):
        list(handler(before=form_error()))
    assert switch.press() is None
    switch.submit()
    switch.withdraw()
    assert switch.press() is None

    # A running job takes the press as before (and keeps its image); the next starts afresh.
    def engine(job):
        try:
            for i in range(1, 100_000):
                job.callback(_progress(i))
                time.sleep(0.002)
        except KeyboardInterrupt:
            raise Interrupted(None, i) from None

    switch.submit()
    outs = handler(work=engine)
    assert isinstance(next(outs), jobs.Tick)
    assert switch.press() == "running"
    with pytest.raises(Interrupted):
        list(outs)
    switch.submit()
    assert list(handler()) == [("result", 7)] and ran == [1, 1, 1, 1]


def _stopped_after_first_preview(outs, switch) -> tuple:
    """Drive a handler's outputs, pressing Stop at the first preview image; the output after it
    (read before the generator ends, which removes the job's download folder)."""
    for out in outs:
        if isinstance(out[0], Image.Image):
            assert switch.press()
            return next(outs)
    raise AssertionError("no preview")


@pytest.mark.parametrize("tab", ["gatys", "gatys2", "texture", "dream"])
def test_stop_keeps_the_image_so_far_as_the_result(handlers, uploads, tab):
    pytest.importorskip("gradio")
    from convscope.images import read_png_metadata
    from convscope.style.config import StyleConfig
    from convscope.vis.dream import DreamConfig
    from convscope.vis.texture import TextureConfig
    from convscope.web import forms

    content, style = uploads / "c.png", uploads / "s.png"
    photo().save(content)
    photo(48, 48).save(style)
    switch = jobs.StopSwitch()
    if tab.startswith("gatys"):
        # 400 iterations: a preview every 20 (the page asks for about 20 per run), stopped long before the
        # end; with two scales, in the first (32 px): its image comes at the size asked for
        form = _form(StyleConfig, forms.GATYS_MAIN + forms.GATYS_MORE, size=64, iterations=400,
                     scales=2 if tab == "gatys2" else 0)
        outs = handlers.stylize("gatys", record(content), record(style), None, "", form, {}, switch)
    elif tab == "texture":
        form = _form(TextureConfig, forms.TEXTURE_MAIN + forms.TEXTURE_MORE, size="64 48", iterations=400,
                     source_size=48)
        outs = handlers.texture(record(style), form, switch)
    else:
        form = _form(DreamConfig, forms.DREAM_MAIN + forms.DREAM_MORE, size=64, octaves=1, steps=400,
                     layer="relu2_1")
        outs = handlers.dream(record(content), form, switch)
    image, status, download = _stopped_after_first_preview(outs, switch)
    assert status.startswith("stopped ") and status.endswith("64x48"), status
    assert ("of stage" in status) == (tab == "gatys2")
    assert image.size == (64, 48) and Image.open(download).size == (64, 48)
    at = read_png_metadata(download)["interrupted_at"]
    assert 20 <= (at["step"] if tab == "dream" else at["iteration"]) < 400
    assert list(outs) == []
    assert not switch.press()


def test_gatys_from_the_one_pass_result(handlers, uploads):
    pytest.importorskip("gradio")
    from convscope.images import read_png_metadata
    from convscope.style.config import StyleConfig
    from convscope.web import forms

    content, style = uploads / "c.png", uploads / "s.png"
    photo().save(content)
    photo(48, 48).save(style)
    form = _form(StyleConfig, forms.GATYS_MAIN + forms.GATYS_MORE, init="fast", size=64, iterations=3)
    outs = handlers.stylize("gatys", record(content), record(style), None, "", form, {})
    download = next(download for _, status, download in outs if status.startswith("done"))
    assert Image.open(download).size == (64, 48)
    assert read_png_metadata(download)["config"]["init"] == "fast"  # the page copies it while the job waits
    outs.close()


def test_dream_and_explain_handlers(handlers, uploads):
    pytest.importorskip("gradio")
    from convscope.vis.dream import DreamConfig
    from convscope.vis.explain import ExplainConfig
    from convscope.web import forms

    path = uploads / "d.png"
    photo(64, 48).save(path)
    form = _form(DreamConfig, forms.DREAM_MAIN + forms.DREAM_MORE, size=64, octaves=1, steps=3, layer="relu2_1")
    outs = list(handlers.dream(record(path), form))
    assert any(o[1].startswith("octave 1/1 · step") for o in outs[1:-1])
    previews = [o[0] for o in outs[1:-1] if isinstance(o[0], Image.Image)]
    assert previews and all(p.size == (64, 48) for p in previews)
    assert outs[-1][0].size == (64, 48) and outs[-1][1].startswith("done")

    form = _form(ExplainConfig, forms.EXPLAIN_MAIN + forms.EXPLAIN_MORE, size=64)
    figure, gallery, top, status = list(handlers.explain(record(path), form))[-1]
    assert figure.width > 300 and len(top) == 5 and status.endswith("s")
    assert [caption for _, caption in gallery][1].startswith("Grad-CAM")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A folder holding one tiny trained classifier run, `cifar` (classes cat and dog, 16 px)."""
    import torch

    from convscope.classify.config import TrainConfig
    from convscope.classify.data import DataSplits, ImageData
    from convscope.classify.run import RunDir
    from convscope.classify.train import train

    folder = tmp_path_factory.mktemp("runs")
    g = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 255, (12, 3, 16, 16), dtype=torch.uint8, generator=g), torch.arange(12) % 2,
                     ["cat", "dog"], None, [])
    train(DataSplits(data, data, "synthetic", "test"),
          TrainConfig(model="simple", epochs=1, batch_size=4, input_size=16, device="cpu"), RunDir(folder / "cifar"))
    return folder


def test_explain_offers_the_servers_trained_runs(uploads, runs):
    # The CLI explains any run folder (--net RUN); the page offered only the two ImageNet nets.
    pytest.importorskip("gradio")
    from convscope.vis.explain import ExplainConfig
    from convscope.web import forms
    from convscope.web.handlers import Handlers, Settings

    h = Handlers(Settings(limits=Limits(upload_root=uploads), runs=runs, device="cpu"))
    try:
        net_spec = h.explain_specs[0]
        assert net_spec.choices == (forms.IMAGENET, "vgg19", "run: cifar")
        path = uploads / "p.png"
        photo(40, 30).save(path)
        form = _form(ExplainConfig, forms.EXPLAIN_MAIN + forms.EXPLAIN_MORE, net="run: cifar", target="dog")
        figure, gallery, top, status = list(h.explain(record(path), form))[-1]
        assert status.startswith("dog: done") and set(top) == {"cat (0)", "dog (1)"}
        assert gallery[0][0].size == (16, 12)  # the run's own input size, not 224
    finally:
        h.cleanup()


def test_find_runs_offers_only_run_folders(tmp_path):
    from convscope.web.runs import find_runs

    (tmp_path / "a" / "run1").mkdir(parents=True)
    (tmp_path / "a" / "run1" / "config.json").write_text('{"kind": "convscope-classifier"}')
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text('{"kind": "something else"}')
    assert find_runs(tmp_path) == {"run: a/run1": tmp_path / "a" / "run1"}


# ---- See inside (no browser) -----------------------------------------------------------------------
@pytest.fixture
def inside(handlers):
    from convscope.web.handlers_inside import InsideHandlers

    return InsideHandlers(handlers)


def _inside_form(inside, tab: str, **values) -> dict:
    """What the See inside tab's untouched `tab` form sends, with `values` typed in."""
    from convscope.vis.configs import ActivationsConfig, ClassVizConfig, FeatureVizConfig, InvertConfig
    from convscope.web import forms

    cls, specs = {"activations": (ActivationsConfig, inside.activations_specs + forms.ACTIVATIONS_MORE),
                  "featureviz": (FeatureVizConfig, inside.featureviz_specs + forms.FEATUREVIZ_MORE),
                  "classviz": (ClassVizConfig, inside.classviz_specs + forms.CLASSVIZ_MORE),
                  "invert": (InvertConfig, inside.invert_specs + forms.INVERT_MORE)}[tab]
    return _form(cls, specs, **values)


def test_activations_shows_the_clis_grid_with_its_settings_in_the_download(inside, handlers, uploads):
    pytest.importorskip("gradio")
    from convscope.images import read_png_metadata

    path = uploads / "a.png"
    photo(64, 48).save(path)
    outs = inside.activations(record(path, "mine.png"), _inside_form(inside, "activations", layer="relu2_1",
                                                                      max_channels=8, size=64))
    assert next(outs)[1].startswith("running the image")
    figure, status, downloads = next(outs)
    assert downloads == [figure] and Image.open(figure).width > 300
    assert status.startswith("done in ") and "relu2_1 128x24x32, 8 of 128 channels shown" in status
    meta = read_png_metadata(figure)  # the page copies it while the job's generator waits
    assert meta["command"] == "activations" and meta["input"] == "mine.png" and meta["layer"] == "relu2_1"
    assert len(meta["channels_shown"]) == 8 and meta["config"]["device"] == "cpu"
    assert list(outs) == [] and list(handlers.tmp.iterdir()) == []

    # all-conv: one figure per block, shown one above the other, each its own download as the CLI writes them
    figure, status, downloads = list(inside.activations(record(path), _inside_form(
        inside, "activations", layer="all-conv", max_channels=2, size=64)))[-1]
    assert [Path(d).name for d in downloads] == [f"activations_relu{b}_{n}.png" for b, n in
                                                 ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))]
    assert isinstance(figure, Image.Image) and figure.height > 3 * figure.width and status.count("channels shown") == 5


def test_featureviz_and_classviz_show_progress_then_the_clis_pictures(inside, handlers):
    pytest.importorskip("gradio")
    from convscope.images import read_png_metadata

    outs = inside.featureviz(_inside_form(inside, "featureviz", layer="relu1_2", channels="0-3", steps=4, size=16))
    seen = []
    for image, status, download in outs:
        seen.append(status)
        if status.startswith("done"):
            meta = read_png_metadata(download)
            break
    assert seen[0] == "loading the network..."
    progress = seen[1:-1]
    assert progress and all(re.fullmatch(r"step [1-4]/4 · activation \S+ · \d+ s · ETA \d+ s", s) for s in progress)
    assert "4 panel(s) of 16x16 px; activation" in seen[-1] and image.width > 300
    assert download.endswith("featureviz.png")
    assert meta["command"] == "featureviz" and [p["index"] for p in meta["panels"]] == [0, 1, 2, 3]
    assert list(outs) == [] and list(handlers.tmp.iterdir()) == []

    outs = list(inside.classviz(_inside_form(inside, "classviz", target_class="dumbbell", steps=2, size=32)))
    picture, status, download = outs[-1]
    assert picture.size == (32, 32) and download.endswith("classviz.png")
    assert status.startswith("done in ") and "class 543 dumbbell, 32x32: logit" in status and "probability" in status


def test_invert_shows_the_reconstruction_forming_then_its_error(inside, uploads):
    pytest.importorskip("gradio")
    path = uploads / "i.png"
    photo(64, 48).save(path)
    outs = list(inside.invert(record(path), _inside_form(inside, "invert", layer="relu1_2", size=32, iterations=6)))
    previews = [o for o in outs[1:-1] if isinstance(o[0], Image.Image)]
    assert previews and all(o[0].size == (32, 24) and "iteration" in o[1] and "ETA" in o[1] for o in previews)
    image, status, download = outs[-1]
    assert image.size == (32, 24) and download.endswith("inversion.png")
    assert status.startswith("done in ") and "32x24 (relu1_2: representation error " in status


@pytest.mark.parametrize("tab", ["featureviz", "classviz", "invert"])
def test_see_inside_stop_keeps_what_it_has_so_far(inside, uploads, tab):
    # As Ctrl-C on the command line: featureviz keeps the sheet so far, classviz the picture, invert
    # the best reconstruction; each with where it stopped in its metadata.
    pytest.importorskip("gradio")
    from convscope.images import read_png_metadata

    path = uploads / "i.png"
    photo(64, 48).save(path)
    switch = jobs.StopSwitch()
    if tab == "featureviz":
        outs = inside.featureviz(_inside_form(inside, tab, layer="relu1_2", channels="0-2", steps=100_000, size=16),
                                 switch)
    elif tab == "classviz":
        outs = inside.classviz(_inside_form(inside, tab, target_class="3", steps=100_000, size=32), switch)
    else:
        outs = inside.invert(record(path), _inside_form(inside, tab, layer="relu1_2", size=32, iterations=400), switch)
    for image, status, _ in outs:  # running: its progress in the status (invert: a preview too)
        if isinstance(image, Image.Image) if tab == "invert" else status.startswith("step"):
            assert switch.press() == "running"
            break
    # A progress update already on its way may still come after the press (seen under load); the
    # job's files live while its generator does, so it is read before the generator ends.
    image, status, download = next((image, status, download) for image, status, download in outs
                                   if status.startswith("stopped"))
    meta = read_png_metadata(download)
    if tab == "featureviz":
        assert re.fullmatch(r"stopped at step \d+ of batch 1: the sheet so far, 3 panel\(s\)", status), status
        assert image.width > 300 and len(meta["panels"]) == 3 and 1 <= meta["interrupted_at"]["step"] < 100_000
    elif tab == "classviz":
        assert re.fullmatch(r"stopped at step \d+ of batch 1: the picture so far, 32x32", status), status
        assert image.size == (32, 32) and 1 <= meta["interrupted_at"]["iteration"] < 100_000
    else:
        assert re.fullmatch(r"stopped at iteration \d+: the best reconstruction so far \(representation error "
                            r"\S+\), 32x24", status), status
        assert image.size == (32, 24) and 20 <= meta["interrupted_at"]["iteration"] < 400
    assert meta["command"] == tab and Image.open(download).size == image.size
    assert list(outs) == []
    assert not switch.press()


@pytest.mark.parametrize("tab, values, message", [
    ("activations", {"max_channels": 0}, "max channels must be a positive whole number, not 0"),
    ("activations", {"layer": "relu9_1"},
     "unknown layer 'relu9_1' for net 'vgg19' (did you mean 'relu5_1'?); the layer box suggests them"),
    ("featureviz", {"layer": "relu1_1", "channels": "0-99", "size": 16},
     "channels 0-99: channel 64 is out of range, relu1_1 has 64 channels (0 to 63)"),
    ("featureviz", {"channels": "0-3", "target_class": "dumbbell"},
     "class and channels are two different objectives; give one of them"),
    ("classviz", {"target_class": "dumbel", "size": 32}, "unknown class 'dumbel' for efficientnet_lite0"),
    ("invert", {"size": 8}, "size 8 is out of range (16 to 4096 px)"),
])
def test_see_inside_mistakes_are_one_line_naming_the_form_fields(inside, uploads, tab, values, message):
    # The engines' messages name CLI flags (--max-channels) and the CLI's layer listing; the page
    # names its own fields and its layer box.
    pytest.importorskip("gradio")
    path = uploads / "i.png"
    photo().save(path)
    form = _inside_form(inside, tab, **values)
    run = {"activations": lambda: inside.activations(record(path), form),
           "featureviz": lambda: inside.featureviz(form), "classviz": lambda: inside.classviz(form),
           "invert": lambda: inside.invert(record(path), form)}[tab]
    with pytest.raises(ConfigError) as err:
        list(run())
    text = str(err.value)
    assert text.startswith(message) and "--" not in text and "convscope" not in text and "\n" not in text, text


def test_see_inside_sizes_are_capped(uploads):
    pytest.importorskip("gradio")
    from convscope.web.handlers import Handlers, Settings
    from convscope.web.handlers_inside import InsideHandlers

    path = uploads / "i.png"
    photo(80, 60).save(path)
    h = Handlers(Settings(limits=Limits(max_pixels=10_000, upload_root=uploads), device="cpu"))
    inside = InsideHandlers(h)
    try:
        for run, message in [
            (lambda: inside.activations(record(path), _inside_form(inside, "activations", size=200)),
             "size 200 makes a 200x150 image, over this server's limit of 10,000 pixels"),
            (lambda: inside.activations(record(path), _inside_form(inside, "activations")),  # the default, 224
             "size 224 makes a 224x168 image"),
            (lambda: inside.activations(record(path), _inside_form(inside, "activations", size=64, max_channels=8)),
             "the feature maps come to "),  # the figure, a panel per channel shown
            (lambda: inside.invert(record(path), _inside_form(inside, "invert", size=200)), "size 200 makes a 200x150"),
            (lambda: inside.featureviz(_inside_form(inside, "featureviz", size=128)), "size 128 makes a 128x128"),
            (lambda: inside.featureviz(_inside_form(inside, "featureviz", layer="relu1_2", channels="0-3", size=64)),
             "4 panel(s) x 1 cop(ies) of 64x64 px are 16,384 pixels, over this server's limit of 10,000"),
        ]:
            with pytest.raises(ConfigError, match=re.escape(message)):
                list(run())
    finally:
        h.cleanup()


def test_the_layer_box_suggests_the_nets_layers(inside):
    pytest.importorskip("gradio")
    from convscope.vis.configs import ActivationsConfig
    from convscope.web.widgets import make_widget

    choices = inside.layer_choices("vgg19")
    assert choices[:3] == ["auto", "conv1_1", "relu1_1"] and choices[-1] == "pool5" and len(choices) == 38
    assert inside.layer_choices("vgg19", "all-conv")[:3] == ["auto", "all-conv", "conv1_1"]
    spec = next(s for s in inside.activations_specs if getattr(s, "name", None) == "layer")
    box = make_widget(ActivationsConfig, spec)
    assert box.value == "auto" and [c[1] for c in box.choices] == inside.layer_choices("vgg19", "all-conv")
    assert parse_value(ActivationsConfig, spec, " block3_conv1 ") == "block3_conv1"  # suggested, not limited to them
    for net in ("/etc", ["vgg19"], "resnet18"):  # a browser's value: only the nets the forms offer
        with pytest.raises(ConfigError, match="unknown net"):
            inside.layer_choices(net)


def test_see_inside_offers_the_servers_trained_runs(uploads, runs):
    pytest.importorskip("gradio")
    from convscope.images import read_png_metadata
    from convscope.web.handlers import Handlers, Settings
    from convscope.web.handlers_inside import InsideHandlers

    h = Handlers(Settings(limits=Limits(upload_root=uploads), runs=runs, device="cpu"))
    inside = InsideHandlers(h)
    try:
        nets = {name: next(s for s in specs if getattr(s, "name", None) == "net").choices for name, specs in
                [("activations", inside.activations_specs), ("featureviz", inside.featureviz_specs),
                 ("classviz", inside.classviz_specs)]}
        assert nets == {"activations": ("vgg19", "efficientnet_lite0", "run: cifar"),
                        "featureviz": ("vgg19", "efficientnet_lite0", "run: cifar"),
                        "classviz": ("efficientnet_lite0", "run: cifar")}
        assert inside.layer_choices("run: cifar")[:2] == ["auto", "normalize"]
        path = uploads / "p.png"
        photo(40, 30).save(path)
        outs = inside.activations(record(path), _inside_form(inside, "activations", net="run: cifar"))
        next(outs)
        figure, status, _ = next(outs)
        meta = read_png_metadata(figure)
        assert meta["config"]["net"] == "run: cifar" and meta["input_size"] == [16, 12]  # the run's own size
        assert str(runs) not in Path(figure).read_bytes().decode("latin-1")  # no server path in the download
        outs.close()
        picture, status, _ = list(inside.classviz(_inside_form(inside, "classviz", net="run: cifar",
                                                               target_class="dog", steps=2)))[-1]
        assert picture.size == (16, 16) and "class 1 dog" in status
    finally:
        h.cleanup()


# ---- the serve command ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_help_names_every_tab_of_the_page(capsys):
    # The help listed four tabs and offered --runs "in the Classify tab" after See inside was added
    # and Explain and See inside took the runs too (test_explain_offers_the_servers_trained_runs,
    # test_see_inside_offers_the_servers_trained_runs). The page's tabs, from its source (no Gradio):
    web = Path(__file__).resolve().parents[1] / "src" / "convscope" / "web"
    tabs = re.findall(r'gr\.Tab\("([^"]+)"[^)]*elem_id="tab-', "".join(p.read_text() for p in web.glob("app*.py")))
    assert len(tabs) == 5 and "See inside" in tabs
    assert main(["serve", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert all(tab in text for tab in tabs), tabs
    assert "under this folder in the Classify, Explain and See inside tabs" in text


def test_serve_port_in_use_is_a_one_line_error(capsys):
    pytest.importorskip("gradio")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is in use" in err and "Traceback" not in err


def test_serve_without_gradio_says_how_to_install(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    assert main(["serve", "--port", str(free_port())]) == 2
    assert "pip install 'convscope[web]'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--runs", "/no/such/folder"], "--runs /no/such/folder: no such folder"),
    (["--runs", __file__], "a file, not a folder of classify runs"),  # (it said "no such folder")
    (["--concurrency", "0"], "--concurrency must be from 1 to 64"),
    (["--max-upload-mb", "0"], "--max-upload-mb must be positive"),
    (["--max-upload-mb", "inf"], "--max-upload-mb must be positive and at most 1,000,000"),  # was a traceback
    (["--max-upload-mb", "1e300"], "--max-upload-mb must be positive and at most"),  # Gradio failed to start
    # Under a byte: "max bytes must be a positive whole number, not 0", naming no flag of serve.
    (["--max-upload-mb", "1e-9"], "--max-upload-mb 1e-09 is under one byte; give at least 1e-06"),
])
def test_serve_bad_options(argv, message, capsys):
    pytest.importorskip("gradio")
    assert main(["serve", "--port", str(free_port()), *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("host, warned", [("127.0.0.1", False), ("0.0.0.0", True)])
def test_serve_prints_the_url_and_warns_off_loopback(monkeypatch, capsys, host, warned):
    pytest.importorskip("gradio")
    from convscope.commands import serve

    launched = {}
    monkeypatch.setattr(serve, "launch", lambda demo, h, p, b: launched.update(host=h, port=p, max_bytes=b))
    port = free_port()
    assert main(["serve", "--host", host, "--port", str(port), "--max-upload-mb", "2"]) == 0
    err = capsys.readouterr().err
    assert launched == {"host": host, "port": port, "max_bytes": 2 * 2**20}
    assert f"http://{host}:{port}" in err
    assert ("warning: listening on 0.0.0.0" in err) == warned


# ---- in the browser ------------------------------------------------------------------------------
def _browser_missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is absent (Debian's chromium package; .ci/run installs it)"
    for module in ("gradio", "playwright"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install '.[test]')"
    return None


browser_test = pytest.mark.skipif(_browser_missing() is not None, reason=_browser_missing() or "")


@pytest.fixture(scope="module")
def server():
    """The app on a free loopback port, in this process."""
    import gradio.utils

    from convscope.web.app import build_app
    from convscope.web.handlers import Settings

    limits = Limits(max_bytes=2 * 2**20, upload_root=Path(gradio.utils.get_upload_folder()))
    demo = build_app(Settings(limits=limits, device="cpu"))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                ssr_mode=False, max_file_size=limits.max_bytes)
    yield demo, f"http://127.0.0.1:{port}/"
    demo.close()
    demo.convscope_handlers.cleanup()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1300, "height": 1000})
        pg.set_default_timeout(90_000)
        pg.goto(server[1])
        pg.wait_for_selector("#stylize-run")
        yield pg
        browser.close()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    photo(80, 60).save(folder / "content.png")
    photo(64, 64, seed=3).rotate(90).save(folder / "style.png")
    (folder / "notes.png").write_bytes(b"this is text, not a picture")
    return folder


def shot(pg, name: str) -> None:
    folder = ARTIFACTS / "web"
    folder.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def pick(pg, dropdown: str, text: str) -> None:
    pg.click(f"{dropdown} input")
    pg.click(f"li[role=option]:has-text('{text}')")


def set_number(pg, elem: str, value) -> None:
    box = pg.locator(f"{elem} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    box.blur()


def result_size(pg, elem: str) -> tuple[int, int]:
    img = pg.locator(f"{elem} img")
    pg.wait_for_function(f"() => {{ const i = document.querySelector('{elem} img'); "
                         "return i && i.complete && i.naturalWidth > 0; }")
    return tuple(img.evaluate("i => [i.naturalWidth, i.naturalHeight]"))


def wait_status(pg, elem: str, text: str) -> str:
    pg.wait_for_function(f"() => (document.querySelector('{elem}')?.innerText || '').includes({text!r})")
    return pg.inner_text(elem)


def test_api_clients_run_the_jobs_that_have_a_stop_switch(server, tmp_path):
    # gradio_client sessions get their gr.State by a deep copy, which a StopSwitch (it holds a lock)
    # refused: /stylize, /dream and /texture failed for every API client.
    client_module = pytest.importorskip("gradio_client")
    photo(48, 48).save(tmp_path / "t.png")
    client = client_module.Client(server[1], verbose=False)
    image, status, download = client.predict(source=client_module.handle_file(str(tmp_path / "t.png")),
                                             size="32 24", iterations=3, api_name="/texture")
    assert status.startswith("done") and Image.open(image).size == (32, 24)


def test_api_clients_see_inside(server, tmp_path):
    client_module = pytest.importorskip("gradio_client")
    photo(48, 36).save(tmp_path / "i.png")
    image = client_module.handle_file(str(tmp_path / "i.png"))
    client = client_module.Client(server[1], verbose=False)
    figure, status, downloads = client.predict(image=image, layer="relu2_1", max_channels=4, size="48",
                                               api_name="/activations")
    assert status.startswith("done") and "4 of 128 channels shown" in status and len(downloads) == 1
    sheet, status, download = client.predict(layer="relu1_2", channels="0-1", steps=2, size="16",
                                             api_name="/featureviz")
    assert status.startswith("done") and "2 panel(s) of 16x16 px" in status
    result, status, download = client.predict(image=image, layer="relu1_2", size="16", iterations=3, api_name="/invert")
    assert "representation error" in status and Image.open(result).size == (16, 12)


@browser_test
def test_browser_stylize_fast_then_gatys(page, pictures):
    pg = page
    pg.click("button[role=tab]:has-text('Stylize')")
    pg.set_input_files("#stylize-content input[type=file]", str(pictures / "content.png"))
    pg.set_input_files("#stylize-style input[type=file]", str(pictures / "style.png"))
    pg.wait_for_selector("#stylize-content img")
    pg.wait_for_selector("#stylize-style img")

    pick(pg, "#stylize-method", "starry_night")
    pg.wait_for_selector("#fast-strength", state="visible")
    pg.wait_for_selector("#stylize-stop", state="hidden")  # one pass: nothing to stop early
    pg.click("#stylize-run")
    assert wait_status(pg, "#stylize-status", "done").startswith("done")
    assert result_size(pg, "#stylize-result") == (80, 60)  # fast: the content's own size
    link = pg.locator("#stylize-download a").first
    assert link.get_attribute("href").endswith("stylized.png")

    pick(pg, "#stylize-method", "gatys")
    pg.wait_for_selector("#gatys-iterations", state="visible")
    set_number(pg, "#gatys-size", 64)
    pg.locator("#gatys-iterations input").fill("6")
    pg.locator("#gatys-iterations input").blur()
    pg.click("#stylize-run")
    status = wait_status(pg, "#stylize-status", "64x48")  # gatys: long side 64
    assert status.startswith("done"), status
    assert result_size(pg, "#stylize-result") == (64, 48)
    shot(pg, "stylize")


@browser_test
def test_browser_cancel_frees_the_device_for_the_next_job(page, pictures, server):
    pg = page
    pg.click("button[role=tab]:has-text('Stylize')")
    pg.set_input_files("#stylize-content input[type=file]", str(pictures / "content.png"))
    pg.set_input_files("#stylize-style input[type=file]", str(pictures / "style.png"))
    pick(pg, "#stylize-method", "gatys")
    set_number(pg, "#gatys-size", 64)
    pg.locator("#gatys-iterations input").fill("100000")
    pg.locator("#gatys-iterations input").blur()
    pg.click("#stylize-run")
    wait_status(pg, "#stylize-status", "iteration")  # live progress: iteration, loss, ETA
    assert "ETA" in pg.inner_text("#stylize-status")
    pg.click("#stylize-cancel")
    wait_status(pg, "#stylize-status", "cancelled")
    deadline = time.monotonic() + 20
    while any(t.name == "convscope-web-job" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(t.name == "convscope-web-job" for t in threading.enumerate())
    # The device slot is free again: a fast job runs at once.
    pick(pg, "#stylize-method", "starry_night")
    pg.click("#stylize-run")
    assert wait_status(pg, "#stylize-status", "done").startswith("done")


def start_a_long_stylization(pg, pictures) -> None:
    """A 64 px gatys stylization of 100,000 iterations, running (it reports iterations) when this returns."""
    pg.click("button[role=tab]:has-text('Stylize')")
    pick(pg, "#stylize-method", "gatys")  # a built-in style (an earlier test's) hides the style image
    pg.set_input_files("#stylize-content input[type=file]", str(pictures / "content.png"))
    pg.set_input_files("#stylize-style input[type=file]", str(pictures / "style.png"))
    set_number(pg, "#gatys-size", 64)
    pg.locator("#gatys-iterations input").fill("100000")
    pg.locator("#gatys-iterations input").blur()
    pg.click("#stylize-run")
    wait_status(pg, "#stylize-status", "iteration")


@browser_test
def test_browser_stop_keeps_the_image_so_far(page, pictures):
    pg = page
    start_a_long_stylization(pg, pictures)
    pg.click("#stylize-stop")
    status = wait_status(pg, "#stylize-status", "stopped at iteration")
    assert status.endswith("64x48"), status
    assert result_size(pg, "#stylize-result") == (64, 48)
    assert pg.locator("#stylize-download a").first.get_attribute("href").endswith("stylized.png")


@browser_test
def test_browser_stop_ends_a_queued_job_before_it_starts(page, pictures):
    # The test server runs one job at a time: a texture waits in Gradio's queue behind a running
    # stylization. Its Stop used to do nothing while it waited, and it then ran to its end.
    pg = page
    start_a_long_stylization(pg, pictures)

    pg.click("button[role=tab]:has-text('Dream & textures')")
    pg.click("button[role=tab]:has-text('Texture synthesis')")
    pg.set_input_files("#texture-source input[type=file]", str(pictures / "style.png"))
    pg.wait_for_selector("#texture-source img")
    pg.locator("#texture-size input").fill("32 24")
    pg.locator("#texture-iterations input").fill("5")
    pg.locator("#texture-iterations input").blur()
    pg.click("#texture-run")
    pg.wait_for_selector("#texture-result .progress-text:has-text('queue')")  # it waits its turn
    pg.click("#texture-stop")
    deadline = time.monotonic() + 10  # (the status shows a timer while the press is answered)
    while "stopping" not in pg.inner_text("#texture-status") and time.monotonic() < deadline:
        time.sleep(0.1)
    acked = pg.inner_text("#texture-status")

    pg.click("button[role=tab]:has-text('Stylize')")
    pg.click("#stylize-stop")
    wait_status(pg, "#stylize-status", "stopped at iteration")
    pg.click("button[role=tab]:has-text('Dream & textures')")
    pg.wait_for_function("() => /before it started|done/.test(document.querySelector('#texture-status')"
                         "?.innerText || '')")
    ended = pg.inner_text("#texture-status")
    assert acked == "stopping: the job will end before it starts", (acked, ended)
    assert "stopped before it started: nothing to keep" in ended, ended
    assert pg.locator("#texture-download a").count() == 0

    # A Stop with nothing queued or running is not kept: the next job runs to its end. (Run only
    # once the server has answered the Stop, a quick event: else the two could arrive either way.)
    with pg.expect_response(lambda r: "/run/" in r.url and r.request.method == "POST"):
        pg.click("#texture-stop")
    pg.click("#texture-run")
    status = wait_status(pg, "#texture-status", "done")
    assert status.startswith("done") and status.endswith(")"), status
    assert result_size(pg, "#texture-result") == (32, 24)
    pg.click("button[role=tab]:has-text('DeepDream')")  # the page as the later tests expect it


@browser_test
def test_browser_classify_shows_class_names(page, pictures):
    from convscope.nets import imagenet_classes

    pg = page
    pg.click("button[role=tab]:has-text('Classify')")
    pg.set_input_files("#classify-files input[type=file]",
                       [str(pictures / "content.png"), str(pictures / "style.png")])
    pg.wait_for_selector("#classify-files td[aria-label='style.png']")
    pg.click("#classify-run")
    pg.wait_for_selector("#classify-table table")
    table = pg.inner_text("#classify-table")
    assert "content.png" in table and "style.png" in table
    label = pg.inner_text("#classify-label")
    shown = [name for name in imagenet_classes() if name in label]
    assert shown, label
    assert result_size(pg, "#classify-chart")[0] > 300  # the probability bar chart
    shot(pg, "classify")


@browser_test
def test_browser_screenshots_of_the_other_tabs(page):
    pg = page
    pg.click("button[role=tab]:has-text('Explain')")
    pg.wait_for_selector("#explain-run", state="visible")
    shot(pg, "explain")
    pg.click("button[role=tab]:has-text('Dream & textures')")
    pg.wait_for_selector("#dream-run", state="visible")
    shot(pg, "dream")
    pg.click("button[role=tab]:has-text('Texture synthesis')")
    pg.wait_for_selector("#texture-run", state="visible")
    shot(pg, "texture")
    pg.click("button[role=tab]:has-text('See inside')")
    for tab, name in [("Activations", "activations"), ("Feature visualization", "featureviz"),
                      ("Class visualization", "classviz"), ("Inversion", "invert")]:
        pg.click(f"button[role=tab]:has-text('{tab}')")
        pg.wait_for_selector(f"#{name}-run", state="visible")
        shot(pg, f"inside-{name}")
    for name in ("explain", "dream", "texture", "inside-activations", "inside-featureviz", "inside-classviz",
                 "inside-invert"):
        assert Image.open(ARTIFACTS / "web" / f"{name}.png").size[0] >= 1000


@browser_test
def test_browser_shows_a_users_mistake_in_one_line(page, pictures):
    pg = page
    pg.click("button[role=tab]:has-text('Stylize')")
    pick(pg, "#stylize-method", "starry_night")
    pg.wait_for_selector("#stylize-style", state="hidden")  # a built-in style takes no style image
    pg.wait_for_selector("#fast-alpha", state="hidden")
    pg.set_input_files("#stylize-content input[type=file]", str(pictures / "notes.png"))
    pg.click("#stylize-run")
    text = wait_status(pg, "#stylize-status", "error")
    assert "notes.png is not an image" in text and "Traceback" not in pg.content()
    # Over the server's byte cap (2 MB here): refused at upload, with Gradio's message.
    big = pictures / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1000, 1000, 3), dtype=np.uint8)).save(big)
    pg.set_input_files("#stylize-content input[type=file]", str(big))
    pg.wait_for_selector(".toast-body:has-text('exceed the maximum allowed size of 2.0 Mb')")


@browser_test
def test_browser_see_inside_feature_maps_then_an_inversion(page, pictures):
    pg = page
    pg.click("button[role=tab]:has-text('See inside')")
    pg.click("button[role=tab]:has-text('Activations')")
    pg.wait_for_selector("#activations-run", state="visible")
    pg.set_input_files("#activations-image input[type=file]", str(pictures / "content.png"))
    pg.wait_for_selector("#activations-image img")
    layer = pg.locator("#activations-layer input")  # the net's layers are suggested; any name may be typed
    layer.fill("relu9_1")
    layer.press("Enter")
    pg.click("#activations-run")
    text = wait_status(pg, "#activations-status", "error")
    assert "unknown layer 'relu9_1' for net 'vgg19' (did you mean 'relu5_1'?); the layer box suggests them" in text
    layer.fill("relu2_1")
    layer.press("Enter")
    set_number(pg, "#activations-max_channels", 8)
    pg.click("#activations-run")
    status = wait_status(pg, "#activations-status", "done")
    assert "relu2_1 128x84x112, 8 of 128 channels shown" in status, status  # the 80x60 photo at 224 px
    assert result_size(pg, "#activations-figure")[0] > 300
    assert pg.locator("#activations-download a").first.get_attribute("href").endswith("activations.png")
    shot(pg, "inside-activations-done")

    pg.click("button[role=tab]:has-text('Inversion')")
    pg.wait_for_selector("#invert-run", state="visible")
    pg.set_input_files("#invert-image input[type=file]", str(pictures / "content.png"))
    pg.wait_for_selector("#invert-image img")
    layer = pg.locator("#invert-layer input")
    layer.fill("relu1_2")
    layer.press("Enter")
    pg.locator("#invert-size input").fill("32")
    pg.locator("#invert-iterations input").fill("8")
    pg.locator("#invert-iterations input").blur()
    pg.click("#invert-run")
    status = wait_status(pg, "#invert-status", "done")
    assert "32x24 (relu1_2: representation error " in status, status
    assert result_size(pg, "#invert-result") == (32, 24)
    assert pg.locator("#invert-download a").first.get_attribute("href").endswith("inversion.png")
    shot(pg, "inside-invert-done")


def test_an_avif_upload_is_taken_as_the_command_line_takes_it(uploads):
    # The page refused AVIF ("img.avif is a AVIF file; upload a PNG, ...") that load_image reads.
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow cannot write AVIF")
    path = uploads / "phone.avif"
    Image.new("RGB", (40, 30), (200, 40, 40)).save(path)
    assert check_upload(record(path), Limits(upload_root=uploads)).size == (40, 30)

"""Tests for the command line (`convscope.cli.main(argv)`) and the `convscope.stylize` Python API.

Every run is tiny (32 px, 1-3 iterations, CPU, quiet), and every input image is generated in
tmp_path. Inputs live in tmp_path/in and outputs in tmp_path/out, so "nothing was left behind"
is a check of the whole output folder.

A useful oracle: with --style-weight 0 --tv-weight 0 and the default init (the content), the
content loss is zero with a zero gradient at the start, so the output is exactly the content image
as loaded and resized. Tests of odd input files use it to check what the loader made of them.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from interrupt import ctrl_c_bar
from netcache import cached_get_net
import torch
from PIL import Image

import convscope
from convscope import cli
from convscope.cli import main
from convscope.errors import ConfigError
from convscope.images import pil_to_tensor, read_png_metadata, resize_long_side, rgb_to_yiq
from convscope.optimize import Progress

TINY = ["--size", "32", "--iterations", "2", "--device", "cpu", "-q"]
# Most tests are about files, options and outputs, not about the network: stopping at relu2_1
# makes a run ~4x cheaper than the presets' relu5_x. Tests of presets and defaults go deep.
SHALLOW = ["--content-layers", "relu2_1", "--style-layers", "relu1_1", "relu2_1"]
IDENTITY = ["--style-weight", "0", "--tv-weight", "0"]  # output == content (see module docstring)

RED, GREEN, BLUE, YELLOW = (220, 40, 40), (40, 200, 60), (50, 60, 220), (230, 210, 40)


# ----------------------------------------------------------------------------------- helpers

@dataclass
class Run:
    code: int
    out: str
    err: str


def run(capsys, *argv) -> Run:
    """main(argv) with its exit code and captured output.

    argparse reports a malformed option by raising SystemExit(2) from inside main (see
    cli._Parser.error); the process exit status is the same, so it counts as the return value.
    """
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def stylize(capsys, content, styles, out, *extra, tiny=True, shallow=True) -> Run:
    """`convscope stylize CONTENT STYLE... -o OUT [TINY] [SHALLOW] EXTRA` (later options win)."""
    styles = [styles] if isinstance(styles, (str, Path)) else list(styles)
    return run(capsys, "stylize", content, *styles, "-o", out, *(TINY if tiny else []),
               *(SHALLOW if shallow else []), *extra)


def assert_losses(losses: dict) -> None:
    """Finite loss terms, the three of style transfer among them, and 'loss' is their sum."""
    assert {"content", "style", "tv", "loss"} <= set(losses)
    assert all(math.isfinite(v) for v in losses.values())
    assert losses["loss"] == pytest.approx(sum(v for k, v in losses.items() if k != "loss"), rel=1e-5)


def assert_user_error(r: Run, *fragments: str) -> str:
    """Exit 2, exactly one non-empty stderr line 'convscope: error: ...' holding every fragment."""
    assert "Traceback" not in r.err
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1, r.err
    line = lines[0]
    assert line.startswith("convscope: error: "), line
    for fragment in fragments:
        assert fragment.lower() in line.lower(), (fragment, line)
    assert r.code == 2, (r.code, line)
    return line


def names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def assert_empty(folder: Path) -> None:
    """Nothing left: no image, no sidecar, no temp file (.NAME.xxxx.tmp), no probe file."""
    assert names_in(folder) == []


def assert_no_temp_files(folder: Path) -> None:
    assert [n for n in names_in(folder) if n.startswith(".") or n.endswith(".tmp")] == []


def opened(path: Path) -> Image.Image:
    """The image at `path`, fully decoded (fails on a truncated or non-image file)."""
    with Image.open(path) as im:
        im.load()
        return im.copy()


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB")).astype(int)


def sidecar(out: Path) -> dict:
    return json.loads(out.with_suffix(".json").read_text())


def blocks(colours, w=40, h=30) -> Image.Image:
    """Vertical stripes of the given colours, left to right."""
    a = np.zeros((h, w, 3), np.uint8)
    edges = np.linspace(0, w, len(colours) + 1).round().astype(int)
    for c, x0, x1 in zip(colours, edges[:-1], edges[1:]):
        a[:, x0:x1] = c
    return Image.fromarray(a)


def noise(w=30, h=30, seed=0, mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "L":
        return Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def png_claiming(width: int, height: int) -> bytes:
    """A syntactically valid RGB PNG whose IHDR claims width x height but holds one tiny IDAT
    (the same trick as tests/test_images.py: no pixel is ever decoded)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def built_nets():
    nets: dict = {}
    yield nets
    nets.clear()  # give the memory back to the rest of the suite


@pytest.fixture(autouse=True)
def shared_backbone(monkeypatch, built_nets):
    """Build each backbone once for this module instead of once per run.

    A fresh VGG19 costs seconds on CPU (dequantizing 20M weights, then the first pass through new
    weight tensors), a tiny 32 px run a fraction of a second. The nets are frozen (eval, no
    gradients) and no run changes them, so sharing one is safe; loading them is tested elsewhere.
    """
    from convscope.style import gatys

    monkeypatch.setattr(gatys, "get_net", cached_get_net(gatys.get_net, built_nets))


@dataclass
class Inputs:
    folder: Path
    content: Path   # 40x30 stripes of four strong colours
    style: Path     # 30x30 colour noise
    style2: Path    # 30x30 horizontal stripes
    out_dir: Path   # empty, exists

    def make(self, name: str, img: Image.Image, **save_options) -> Path:
        path = self.folder / name
        img.save(path, **save_options)
        return path

    def raw(self, name: str, data: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(data)
        return path


@pytest.fixture
def inputs(tmp_path) -> Inputs:
    folder, out_dir = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    out_dir.mkdir()
    content = folder / "content.png"
    blocks([RED, GREEN, BLUE, YELLOW]).save(content)
    style = folder / "style.png"
    noise(seed=1).save(style)
    style2 = folder / "style2.png"
    blocks([(250, 240, 200), (20, 20, 60)] * 3, 30, 30).transpose(Image.Transpose.ROTATE_90).save(style2)
    return Inputs(folder, content, style, style2, out_dir)


# ------------------------------------------------------------------------------- happy path

def test_stylize_writes_image_sidecar_and_png_metadata(capsys, inputs):
    out = inputs.out_dir / "out.png"
    r = stylize(capsys, inputs.content, inputs.style, out, "--seed", "7", "--style-weight", "12.5",
                shallow=False)  # the defaults, preset layers included
    assert r.code == 0, r.err
    assert r.out == "" and r.err == ""  # -q: no bar, no summary
    assert names_in(inputs.out_dir) == ["out.json", "out.png"]
    assert opened(out).size == (32, 24)  # 40x30 content: long side 32, aspect kept
    meta = sidecar(out)
    config = meta["config"]
    assert (config["size"], config["iterations"], config["seed"], config["style_weight"]) == (32, 2, 7, 12.5)
    assert config["device"] == "cpu" and config["preset"] == "gatys" and config["content_weight"] == 1.0
    assert meta["command"] == "stylize" and meta["seed"] == 7 and meta["iterations_run"] == 2
    assert meta["inputs"] == {"content": str(inputs.content), "styles": [str(inputs.style)]}
    # resolved: the preset's layers and the optimizer's step size, not None
    assert config["content_layers"] == ["block5_conv2"]
    assert config["style_layers"] == [f"block{i}_conv1" for i in range(1, 6)]
    assert config["lr"] == 1.0
    losses = meta["final_losses"]
    assert_losses(losses)
    assert losses["style"] > 0  # a 12.5-weighted style term of a stripes image against noise
    assert meta["versions"]["convscope"] == convscope.__version__
    assert meta["versions"]["torch"] == torch.__version__
    assert read_png_metadata(out) == meta  # PNG text chunk and sidecar hold the same record


def test_strip_writes_progress_image_and_summary(capsys, inputs):
    out = inputs.out_dir / "out.png"
    r = stylize(capsys, inputs.content, inputs.style, out, "--strip", "--size", "32", "--iterations", "2",
                "--device", "cpu", tiny=False)  # not quiet: the summary names what was written
    assert r.code == 0, r.err
    strip = inputs.out_dir / "out_progress.png"
    assert opened(out).size == (32, 24)
    panels = opened(strip)
    assert panels.width > panels.height  # images side by side
    assert "Traceback" not in r.err and "wrote" in r.err and str(strip) in r.err
    assert {"out.png", "out.json", "out_progress.png"} <= set(names_in(inputs.out_dir))
    assert not [n for n in names_in(inputs.out_dir) if n.startswith("out_0")]  # no frames asked for
    assert_no_temp_files(inputs.out_dir)


@pytest.mark.parametrize("command", ["stylize", "texture"])
def test_a_progress_strip_path_that_is_a_folder_is_refused_before_the_run(capsys, inputs, command):
    (inputs.out_dir / "out_progress.png").mkdir()
    out = inputs.out_dir / "out.png"
    if command == "stylize":
        r = stylize(capsys, inputs.content, inputs.style, out, "--strip", "--iterations", "2")
    else:
        r = run(capsys, "texture", inputs.style, "-o", out, "--strip", "--size", "32", "32", "--iterations", "2",
                "--device", "cpu", "-q")
    assert_user_error(r, "out_progress.png")
    assert names_in(inputs.out_dir) == ["out_progress.png"]  # nothing written, the folder untouched


def test_save_every_writes_intermediate_frames(capsys, inputs):
    out = inputs.out_dir / "out.png"
    r = stylize(capsys, inputs.content, inputs.style, out, "--save-every", "1")
    assert r.code == 0, r.err
    for frame in ("out_0001.png", "out_0002.png"):
        assert opened(inputs.out_dir / frame).size == (32, 24)
    assert not (inputs.out_dir / "out_0003.png").exists()
    assert opened(out).size == (32, 24)
    assert_no_temp_files(inputs.out_dir)


def test_jpeg_output_gets_a_sidecar_too(capsys, inputs):
    out = inputs.out_dir / "out.JPG"
    r = stylize(capsys, inputs.content, inputs.style, out, "--iterations", "1")
    assert r.code == 0, r.err
    assert names_in(inputs.out_dir) == ["out.JPG", "out.json"]
    with Image.open(out) as written:
        assert written.format == "JPEG" and written.size == (32, 24)
    assert sidecar(out)["config"]["iterations"] == 1


# ------------------------------------------------------------------------------------ styles

def test_two_styles_with_blend_weights(capsys, inputs):
    out = inputs.out_dir / "out.png"
    r = stylize(capsys, inputs.content, [inputs.style, inputs.style2], out, "--style-blend", "3", "1")
    assert r.code == 0, r.err
    assert opened(out).size == (32, 24)
    meta = sidecar(out)
    assert meta["config"]["style_blend"] == [3.0, 1.0]
    assert meta["inputs"]["styles"] == [str(inputs.style), str(inputs.style2)]


def test_blend_weight_zero_is_the_same_as_leaving_that_style_out(capsys, inputs):
    o1, o2, blended = (inputs.out_dir / n for n in ("one.png", "two.png", "blend.png"))
    assert stylize(capsys, inputs.content, inputs.style, o1).code == 0
    assert stylize(capsys, inputs.content, inputs.style2, o2).code == 0
    r = stylize(capsys, inputs.content, [inputs.style, inputs.style2], blended, "--style-blend", "1", "0")
    assert r.code == 0, r.err
    one, two, mix = pixels(opened(o1)), pixels(opened(o2)), pixels(opened(blended))
    assert np.abs(one - two).mean() > 1  # the two styles do lead to different images...
    assert np.abs(mix - one).max() <= 1  # ...and a zero blend weight removes the second one


@pytest.mark.parametrize("n_styles,blend,fragment", [
    (2, ["1", "2", "3"], "3 weight(s) for 2 style image(s)"),
    (1, ["1", "1"], "2 weight(s) for 1 style image(s)"),
    (2, ["0", "0"], "must not all be zero"),
    (2, ["1", "-1"], "non-negative"),
])
def test_bad_style_blend(capsys, inputs, n_styles, blend, fragment):
    styles = [inputs.style, inputs.style2][:n_styles]
    r = stylize(capsys, inputs.content, styles, inputs.out_dir / "out.png", "--style-blend", *blend,
                shallow=False)
    assert_user_error(r, "--style-blend", fragment)
    assert_empty(inputs.out_dir)


# ------------------------------------------------------------------------- bad input files

def _truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    noise(64, 64).save(buf, format="JPEG", quality=90)
    return buf.getvalue()[: len(buf.getvalue()) // 2]


BAD_FILES = {
    "empty": (lambda inp: inp.raw("empty.png", b""), "empty (0 bytes)"),
    "text named .jpg": (lambda inp: inp.raw("notes.jpg", b"this is not a picture\n" * 20), "not an image"),
    "truncated jpeg": (lambda inp: inp.raw("half.jpg", _truncated_jpeg()), "truncated or corrupt"),
    "missing": (lambda inp: inp.folder / "nowhere.png", "not found"),
    "huge header": (lambda inp: inp.raw("huge.png", png_claiming(30000, 30000)), "too large"),
}


@pytest.mark.parametrize("role", ["content", "style"])
@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_input_file(capsys, inputs, role, kind):
    make, fragment = BAD_FILES[kind]
    bad = make(inputs)
    content, style = (bad, inputs.style) if role == "content" else (inputs.content, bad)
    r = stylize(capsys, content, style, inputs.out_dir / "out.png", shallow=False)
    assert_user_error(r, fragment, str(bad))
    assert_empty(inputs.out_dir)


def test_a_newline_in_a_file_name_stays_one_line(capsys, inputs):
    # POSIX file names may hold a newline: the error naming one was printed on two lines.
    bad = inputs.raw("half\nway.jpg", _truncated_jpeg())
    r = stylize(capsys, bad, inputs.style, inputs.out_dir / "out.png")
    assert_user_error(r, "truncated or corrupt", "half\\nway.jpg")
    r = run(capsys, "stylize", inputs.content, inputs.style, "-o", inputs.out_dir / "out.png", "--extra\nword")
    assert_user_error(r, "--extra\\nword")
    assert_empty(inputs.out_dir)


def test_bad_second_style_image(capsys, inputs):
    bad = inputs.raw("empty.jpg", b"")
    r = stylize(capsys, inputs.content, [inputs.style, bad], inputs.out_dir / "out.png")
    assert_user_error(r, "empty", str(bad))
    assert_empty(inputs.out_dir)


def test_input_that_is_a_folder(capsys, inputs):
    r = stylize(capsys, inputs.folder, inputs.style, inputs.out_dir / "out.png")
    assert_user_error(r, "is a folder")
    assert_empty(inputs.out_dir)


# -------------------------------------------------------------------- odd but valid inputs

def test_one_pixel_content(capsys, inputs):
    content = inputs.make("dot.png", Image.new("RGB", (1, 1), RED))
    out = inputs.out_dir / "out.png"
    r = stylize(capsys, content, inputs.style, out, *IDENTITY)
    assert r.code == 0, r.err
    img = opened(out)
    assert img.size == (32, 32)
    assert np.abs(pixels(img) - np.array(RED)).max() <= 2


def test_16_bit_png_is_rescaled_not_clipped(capsys, inputs):
    a = np.full((20, 30), 65535, np.uint16)
    a[:, :15] = 128 * 257  # mid grey in 16 bits; a plain convert("RGB") would clip it to white
    content = inputs.make("deep.png", Image.fromarray(a))
    with Image.open(content) as check:
        assert check.mode.startswith("I")  # really a 16-bit PNG
    out = inputs.out_dir / "out.png"
    r = stylize(capsys, content, inputs.style, out, *IDENTITY)
    assert r.code == 0, r.err
    got = pixels(opened(out))
    assert got.shape == (21, 32, 3)
    assert np.abs(got[:, :12] - 128).max() <= 2 and np.abs(got[:, -12:] - 255).max() <= 2


def test_cmyk_jpeg(capsys, inputs):
    content = inputs.make("print.jpg", Image.new("CMYK", (30, 20), (0, 255, 255, 0)), quality=95)
    with Image.open(content) as check:
        assert check.mode == "CMYK"
    out = inputs.out_dir / "out.png"
    r = stylize(capsys, content, inputs.style, out, *IDENTITY)
    assert r.code == 0, r.err
    got = pixels(opened(out)).reshape(-1, 3).mean(0)
    assert opened(out).size == (32, 21)
    assert got[0] > 200 and got[1] < 60 and got[2] < 60  # C=0 M=Y=100%: red


def test_palette_png_with_transparency_is_over_white(capsys, inputs):
    img = Image.new("P", (30, 20), 0)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 black (transparent), 1 blue
    img.paste(1, (15, 0, 30, 20))
    content = inputs.make("logo.png", img, transparency=0)
    out = inputs.out_dir / "out.png"
    r = stylize(capsys, content, inputs.style, out, *IDENTITY)
    assert r.code == 0, r.err
    got = pixels(opened(out))
    assert got.shape == (21, 32, 3)
    assert got[:, :12].min() >= 250  # transparent: white, not the palette's black
    assert np.abs(got[:, -12:] - np.array([0, 0, 255])).max() <= 3


def test_exif_rotated_photo_comes_out_upright(capsys, inputs):
    photo = Image.new("RGB", (40, 20), BLUE)
    photo.paste(RED, (0, 0, 20, 20))  # stored left half red; orientation 6 puts it on top
    exif = Image.Exif()
    exif[0x0112] = 6
    content = inputs.make("phone.jpg", photo, quality=100, subsampling=0, exif=exif.tobytes())
    out = inputs.out_dir / "out.png"
    r = stylize(capsys, content, inputs.style, out, *IDENTITY)
    assert r.code == 0, r.err
    img = opened(out)
    assert img.size == (16, 32)  # portrait
    got = pixels(img)
    assert np.abs(got[:12].reshape(-1, 3).mean(0) - RED).max() < 12
    assert np.abs(got[-12:].reshape(-1, 3).mean(0) - BLUE).max() < 12


def test_grayscale_style(capsys, inputs):
    style = inputs.make("grey.png", noise(mode="L"))
    out = inputs.out_dir / "out.png"
    r = stylize(capsys, inputs.content, style, out)
    assert r.code == 0, r.err
    assert opened(out).size == (32, 24)


# ------------------------------------------------------------------------------------ output

def test_output_folder_missing(capsys, inputs):
    missing = inputs.out_dir / "nowhere"
    r = stylize(capsys, inputs.content, inputs.style, missing / "out.png")
    assert_user_error(r, "does not exist", str(missing))
    assert not missing.exists()
    assert_empty(inputs.out_dir)


def test_output_folder_not_writable(capsys, inputs, monkeypatch):
    locked = inputs.out_dir / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        # Root ignores mode bits: make os.access report what a normal user would see.
        real_access = os.access
        monkeypatch.setattr(os, "access",
                            lambda p, m, **kw: False if Path(p) == locked else real_access(p, m, **kw))
        r = stylize(capsys, inputs.content, inputs.style, locked / "out.png")
        assert_user_error(r, "not writable", str(locked))
        assert_empty(locked)
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("name", ["out.gif", "out.txt", "out"])
def test_unknown_output_extension(capsys, inputs, name):
    r = stylize(capsys, inputs.content, inputs.style, inputs.out_dir / name)
    assert_user_error(r, "extension", ".png")
    assert_empty(inputs.out_dir)


def test_output_is_a_folder(capsys, inputs):
    (inputs.out_dir / "dir.png").mkdir()
    r = stylize(capsys, inputs.content, inputs.style, inputs.out_dir / "dir.png")
    assert_user_error(r, "folder")
    assert names_in(inputs.out_dir) == ["dir.png"] and names_in(inputs.out_dir / "dir.png") == []


def test_sidecar_is_a_folder(capsys, inputs):
    # Found before the run, not after it: the image was written, then the sidecar failed.
    (inputs.out_dir / "out.json").mkdir()
    r = stylize(capsys, inputs.content, inputs.style, inputs.out_dir / "out.png")
    assert_user_error(r, "folder", "out.json")
    assert names_in(inputs.out_dir) == ["out.json"]


# ----------------------------------------------------------------------------------- options

BAD_OPTIONS = [
    (["--style-weight", "-1"], ["--style-weight", "non-negative", "-1"]),
    (["--content-weight", "-5"], ["--content-weight", "non-negative"]),
    (["--tv-weight", "-0.1"], ["--tv-weight", "non-negative"]),
    (["--style-weight", "nan"], ["--style-weight"]),
    (["--content-weight", "inf"], ["--content-weight"]),
    (["--style-weight", "abc"], ["--style-weight", "invalid float value", "abc"]),  # argparse
    (["--size", "0"], ["--size", "positive"]),
    (["--size", "100000"], ["--size", "too large"]),
    (["--size", "8"], ["--size", "too small"]),
    (["--size", "32.5"], ["--size", "invalid int value"]),  # argparse
    (["--iterations", "0"], ["--iterations", "positive"]),
    (["--lr", "0"], ["--lr", "positive"]),
    (["--lr-decay", "1.5"], ["--lr-decay"]),
    (["--scales", "-1"], ["--scales"]),
    (["--save-every", "-2"], ["--save-every"]),
    (["--style-scale", "0"], ["--style-scale"]),
    (["--style-layers", "relu9_9"], ["unknown layer", "relu9_9", "convscope layers --net vgg19"]),
    (["--style-layers", "relu1_1", "relu4_9"], ["unknown layer", "relu4_9", "did you mean"]),
    (["--content-layers", "blok5_conv2"], ["unknown layer", "did you mean 'block5_conv2'"]),
    (["--style-layer-weights", "1", "2"], ["--style-layer-weights", "2 weight(s) for 5 style layer(s)"]),
    (["--style-layers", "relu1_1", "--style-layer-weights", "0"], ["--style-layer-weights", "zero"]),
    (["--net", "vgg99"], ["unknown net 'vgg99'", "did you mean 'vgg19'"]),
    (["--optimizer", "newton"], ["--optimizer", "invalid choice", "lbfgs"]),  # argparse
    (["--preset", "nope"], ["--preset", "invalid choice", "gatys"]),  # argparse
    (["--pooling", "min"], ["--pooling", "invalid choice"]),  # argparse
    (["--device", "tpu0"], ["unknown device", "tpu0"]),
    (["--device", "cpu:5"], ["device 'cpu:5' does not exist", "use cpu"]),
    (["--no-such-option"], ["unrecognized arguments", "--no-such-option"]),  # argparse
]


@pytest.mark.parametrize("extra,fragments", BAD_OPTIONS, ids=[" ".join(e) for e, _ in BAD_OPTIONS])
def test_bad_option(capsys, inputs, extra, fragments):
    r = stylize(capsys, inputs.content, inputs.style, inputs.out_dir / "out.png", *extra, shallow=False)
    assert_user_error(r, *fragments)
    assert_empty(inputs.out_dir)


def test_init_file_missing(capsys, inputs):
    missing = inputs.folder / "start.png"
    r = stylize(capsys, inputs.content, inputs.style, inputs.out_dir / "out.png", "--init", missing)
    assert_user_error(r, "not found", str(missing))
    assert_empty(inputs.out_dir)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is available here")
def test_cuda_requested_without_a_gpu(capsys, inputs):
    r = run(capsys, "stylize", inputs.content, inputs.style, "-o", inputs.out_dir / "out.png",
            "--size", "32", "--iterations", "2", "-q", "--device", "cuda")
    assert_user_error(r, "cuda", "no CUDA GPU", "--device cpu")
    assert_empty(inputs.out_dir)


def test_missing_style_argument_and_missing_output(capsys, inputs):
    r = run(capsys, "stylize", inputs.content, "-o", inputs.out_dir / "out.png")
    assert_user_error(r, "required", "style")
    r = run(capsys, "stylize", inputs.content, inputs.style)
    assert_user_error(r, "required", "-o/--output")
    assert_empty(inputs.out_dir)


def test_divergence_is_a_one_line_error(capsys, inputs):
    # A huge first L-BFGS step (the largest --lr taken) throws the image far out: the loss overflows.
    r = stylize(capsys, inputs.content, inputs.style, inputs.out_dir / "out.png", "--lr", "1e6",
                "--iterations", "3")
    assert_user_error(r, "diverged", "--lr")
    assert_empty(inputs.out_dir)


def test_failed_run_leaves_no_intermediate_frames(capsys, inputs):
    r = stylize(capsys, inputs.content, inputs.style, inputs.out_dir / "out.png", "--lr", "1e6",
                "--iterations", "3", "--save-every", "1")
    assert_user_error(r, "diverged")
    assert_empty(inputs.out_dir)


def test_failed_rerun_puts_back_the_frames_it_replaced(capsys, inputs):
    """A rerun into the same OUT that fails removes its frames and restores the earlier run's
    frames of the same names (it deleted them: they had been overwritten, then removed)."""
    out = inputs.out_dir / "out.png"
    assert stylize(capsys, inputs.content, inputs.style, out, "--save-every", "1").code == 0
    before = {n: (inputs.out_dir / n).read_bytes() for n in names_in(inputs.out_dir)}
    assert {"out_0001.png", "out_0002.png"} <= before.keys()
    r = stylize(capsys, inputs.content, inputs.style, out, "--lr", "1e6", "--iterations", "3", "--save-every", "1")
    assert_user_error(r, "diverged")
    assert {n: (inputs.out_dir / n).read_bytes() for n in names_in(inputs.out_dir)} == before
    # A rerun that succeeds leaves its own frames and no earlier one aside.
    assert stylize(capsys, inputs.content, inputs.style, out, "--save-every", "1").code == 0
    assert sorted(names_in(inputs.out_dir)) == sorted(before)
    assert_no_temp_files(inputs.out_dir)


# ------------------------------------------------------------ images too thin for the network

def test_very_wide_content_is_a_user_error_not_a_crash(capsys, inputs):
    content = inputs.make("panorama.png", blocks([RED, BLUE] * 5, 400, 30))
    out = inputs.out_dir / "out.png"
    r = stylize(capsys, content, inputs.style, out, "--size", "64", shallow=False)
    if r.code == 0:  # fixed by padding or by a smaller pyramid: fine, if the image is right
        assert opened(out).size == (64, 5)
    else:
        assert_user_error(r, "panorama.png")
        assert_empty(inputs.out_dir)


def test_very_wide_style_is_a_user_error_not_a_crash(capsys, inputs):
    style = inputs.make("banner.png", blocks([RED, BLUE] * 5, 400, 30))
    out = inputs.out_dir / "out.png"
    r = stylize(capsys, inputs.content, style, out, shallow=False)
    if r.code == 0:
        assert opened(out).size == (32, 24)
    else:
        assert_user_error(r, "banner.png")
        assert_empty(inputs.out_dir)


def test_coarse_stage_of_non_square_content(capsys, inputs):
    out = inputs.out_dir / "out.png"
    r = stylize(capsys, inputs.content, inputs.style, out, "--scales", "2", shallow=False)
    if r.code == 0:
        assert opened(out).size == (32, 24)
    else:
        assert_user_error(r, "--scales")
        assert_empty(inputs.out_dir)


# ----------------------------------------------------------------------------------- Ctrl-C

def test_kill_sigterm_stops_like_ctrl_c_and_saves_the_best_image_so_far(inputs):
    # `kill`, `timeout` and job schedulers send SIGTERM: Python's default would die on the spot,
    # nothing saved. cli.main turns it into Ctrl-C for every command. A fresh interpreter, so that
    # the signal cannot reach pytest.
    import subprocess
    import sys

    out = inputs.out_dir / "out.png"
    script = f"""
import os, signal, sys
from convscope import cli
def bar(desc=""):
    def callback(p):
        if p.iteration == 2:
            os.kill(os.getpid(), signal.SIGTERM)
    return callback
cli.progress_bar = bar
sys.exit(cli.main(["stylize", {str(inputs.content)!r}, {str(inputs.style)!r}, "-o", {str(out)!r},
                   "--size", "32", "--iterations", "50", "--device", "cpu"]))
"""
    env = {**os.environ, "PYTHONPATH": str(Path(convscope.__file__).parents[1])}  # this tree's convscope
    done = subprocess.run([sys.executable, "-c", script], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and "interrupted at iteration" in done.stderr
    assert opened(out).size == (32, 24) and "interrupted_at" in sidecar(out)
    assert names_in(inputs.out_dir) == ["out.json", "out.png"]


def test_ctrl_c_saves_best_image_so_far_and_exits_130(capsys, inputs, monkeypatch):
    seen = []

    monkeypatch.setattr(cli, "progress_bar", ctrl_c_bar(2, seen=seen))
    out = inputs.out_dir / "out.png"
    r = stylize(capsys, inputs.content, inputs.style, out, "--size", "32", "--iterations", "5",
                "--device", "cpu", tiny=False)  # not quiet: the progress bar (here: ctrl_c_bar) runs
    assert r.code == 130, r.err
    assert seen == [1, 2]
    assert "Traceback" not in r.err
    assert "interrupted at iteration 2" in r.err and str(out) in r.err
    img = opened(out)
    assert img.size == (32, 24) and img.mode == "RGB"
    assert sidecar(out)["interrupted_at"] == {"stage": 1, "iteration": 2}
    assert read_png_metadata(out)["interrupted_at"] == {"stage": 1, "iteration": 2}
    assert names_in(inputs.out_dir) == ["out.json", "out.png"]


def test_ctrl_c_with_default_device_records_the_resolved_config(capsys, inputs, monkeypatch):
    """--device auto (the default): the sidecar of an interrupted run names the real device."""
    monkeypatch.setattr(cli, "progress_bar", ctrl_c_bar(2))
    out = inputs.out_dir / "out.png"
    r = stylize(capsys, inputs.content, inputs.style, out, "--size", "32", "--iterations", "5", tiny=False)
    assert r.code == 130 and "Traceback" not in r.err, r.err
    meta = sidecar(out)
    assert meta["config"]["device"] != "auto" and meta["config"]["precision"] != "auto"
    assert opened(out).size == (32, 24)


def test_ctrl_c_in_coarse_stage_saves_an_image_of_the_requested_size(capsys, inputs, monkeypatch):
    monkeypatch.setattr(cli, "progress_bar", ctrl_c_bar(2, stage=1))
    content = inputs.make("square.png", blocks([RED, BLUE], 40, 40))
    out = inputs.out_dir / "out.png"
    r = stylize(capsys, content, inputs.style, out, "--size", "32", "--scales", "2", "--iterations", "3",
                "--device", "cpu", tiny=False)
    assert r.code == 130 and str(out) in r.err
    assert sidecar(out)["config"]["size"] == 32
    assert opened(out).size == (32, 32)


def test_ctrl_c_before_optimizing_saves_nothing(capsys, inputs, monkeypatch):
    from convscope import images

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(images, "load_image", interrupted)
    r = stylize(capsys, inputs.content, inputs.style, inputs.out_dir / "out.png")
    assert r.code == 130
    assert "Traceback" not in r.err and "interrupted" in r.err
    assert_empty(inputs.out_dir)


# ----------------------------------------------------------------------------------- layers

def test_layers_table(capsys):
    r = run(capsys, "layers", "--net", "vgg19")
    assert r.code == 0, r.err
    rows = [line.split() for line in r.out.splitlines()[1:] if line.strip()]
    names = [row[0] for row in rows]
    assert names[0] == "conv1_1" and names[-1] == "pool5"
    assert len(names) == 16 * 2 + 5  # 16 convs, 16 relus, 5 pools
    assert ["relu5_2", "ReLU", "512", "16", "block5_conv2"] == rows[names.index("relu5_2")]
    assert "block1_pool" in rows[names.index("pool1")]


def test_layers_json(capsys):
    r = run(capsys, "layers", "--net", "vgg19", "--json")
    assert r.code == 0, r.err
    rows = json.loads(r.out)
    by_name = {row["name"]: row for row in rows}
    assert [row["name"] for row in rows][:3] == ["conv1_1", "relu1_1", "conv1_2"]
    assert by_name["relu5_2"]["aliases"] == ["block5_conv2"]
    assert by_name["pool5"] == {"name": "pool5", "kind": "MaxPool2d", "channels": 512, "stride": 32,
                                "aliases": ["block5_pool"]}


def test_layers_unknown_net(capsys):
    r = run(capsys, "layers", "--net", "vgg99")
    assert_user_error(r, "unknown net 'vgg99'", "did you mean 'vgg19'")
    assert r.out == ""


# ---------------------------------------------------------------------------------- features

FEATURES = [
    (["--optimizer", "lbfgs"], "optimizer", "lbfgs"),
    (["--optimizer", "adam"], "optimizer", "adam"),
    (["--optimizer", "sgd", "--lr-decay", "0.9"], "optimizer", "sgd"),
    (["--preset", "gatys"], "preset", "gatys"),
    (["--preset", "johnson"], "preset", "johnson"),
    (["--preset", "classic"], "preset", "classic"),
    (["--pooling", "avg"], "pooling", "avg"),
    (["--init", "noise"], "init", "noise"),
    (["--init", "style"], "init", "style"),
    (["--preserve-color", "luminance"], "preserve_color", "luminance"),
    (["--preserve-color", "histogram"], "preserve_color", "histogram"),
    (["--tv-kind", "beta", "--style-norm", "gatys"], "tv_kind", "beta"),
    (["--style-layers", "block1_conv1", "relu2_1", "pool2", "--style-layer-weights", "1", "2", "0"],
     "style_layer_weights", [1.0, 2.0, 0.0]),
]


@pytest.mark.parametrize("extra,field,value", FEATURES, ids=[" ".join(e[:2]) for e, _, _ in FEATURES])
def test_feature_runs(capsys, inputs, extra, field, value):
    out = inputs.out_dir / "out.png"
    r = stylize(capsys, inputs.content, inputs.style, out, *extra, shallow="--preset" not in extra)
    assert r.code == 0, r.err
    assert opened(out).size == (32, 24)
    meta = sidecar(out)
    assert meta["config"][field] == value
    assert_losses(meta["final_losses"])


def test_init_from_file(capsys, inputs):
    start = inputs.make("start.jpg", noise(50, 10, seed=3))  # any size: resized to the output's
    out = inputs.out_dir / "out.png"
    r = stylize(capsys, inputs.content, inputs.style, out, "--init", start)
    assert r.code == 0, r.err
    assert opened(out).size == (32, 24)
    assert sidecar(out)["config"]["init"] == str(start)


def test_init_may_be_the_output_to_refine_it_in_place(capsys, inputs):
    out = inputs.out_dir / "out.png"
    assert stylize(capsys, inputs.content, inputs.style, out).code == 0
    first = out.read_bytes()
    r = stylize(capsys, inputs.content, inputs.style, out, "--init", out)
    assert r.code == 0, r.err
    assert out.read_bytes() != first and opened(out).size == (32, 24)
    assert sidecar(out)["config"]["init"] == str(out)


def test_two_scales(capsys, inputs):
    content = inputs.make("square.png", blocks([RED, BLUE], 40, 40))  # 16x16 at the coarse stage
    out = inputs.out_dir / "out.png"
    r = stylize(capsys, content, inputs.style, out, "--scales", "2", "--save-every", "2")
    assert r.code == 0, r.err
    assert opened(out).size == (32, 32)
    assert sidecar(out)["stage_sizes"] == [[16, 16], [32, 32]]
    assert opened(inputs.out_dir / "out_s1_0002.png").size == (16, 16)
    assert opened(inputs.out_dir / "out_s2_0002.png").size == (32, 32)


def _chroma_error(out: Path, content: Path) -> float:
    """Mean absolute difference of the I and Q channels (YIQ) of out and the resized content."""
    got = pil_to_tensor(opened(out))
    want = pil_to_tensor(resize_long_side(opened(content), max(opened(out).size)))
    return float((rgb_to_yiq(got)[:, 1:] - rgb_to_yiq(want)[:, 1:]).abs().mean())


def test_preserve_color_luminance_keeps_the_content_chroma(capsys, inputs):
    # Start from a grey style so the colours have to come from the content, not from the init.
    style = inputs.make("grey.png", noise(mode="L"))
    kept, free = inputs.out_dir / "kept.png", inputs.out_dir / "free.png"
    for out, mode in ((kept, "luminance"), (free, "none")):
        r = stylize(capsys, inputs.content, style, out, "--init", "style", "--preserve-color", mode)
        assert r.code == 0, r.err
    assert _chroma_error(free, inputs.content) > 0.15  # control: without it the colours are lost
    assert _chroma_error(kept, inputs.content) < 0.06


def test_seed_makes_noise_init_repeatable(capsys, inputs):
    outs = [inputs.out_dir / f"{n}.png" for n in ("a", "b", "c")]
    for out, seed in zip(outs, ("1", "1", "2")):
        r = stylize(capsys, inputs.content, inputs.style, out, "--init", "noise", "--seed", seed)
        assert r.code == 0, r.err
    a, b, c = (pixels(opened(o)) for o in outs)
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 5


# -------------------------------------------------------------------------------- Python API

API = {"size": 32, "iterations": 2, "device": "cpu", "content_layers": ("relu2_1",),
       "style_layers": ("relu1_1", "relu2_1")}  # as SHALLOW


def test_api_returns_pil_image_for_path_or_list_or_image(inputs):
    single = convscope.stylize(inputs.content, inputs.style, **API)
    assert isinstance(single, Image.Image) and single.mode == "RGB" and single.size == (32, 24)
    listed = convscope.stylize(str(inputs.content), [str(inputs.style)], **API)
    assert np.array_equal(pixels(listed), pixels(single))  # one style, as a path or in a list
    two = convscope.stylize(opened(inputs.content), [inputs.style, opened(inputs.style2)],
                            style_blend=(1, 1), **API)
    assert two.size == (32, 24)


def test_api_config_and_keyword_options(inputs):
    config = convscope.StyleConfig(size=48, iterations=5, device="cpu", style_layers=("relu1_1",),
                                   content_layers=("relu1_1",))
    seen = []
    out = convscope.stylize(inputs.content, inputs.style, config=config, iterations=1, callback=seen.append)
    assert out.size == (48, 36)  # from the config...
    assert [p.iteration for p in seen] == [1]  # ...and the keyword wins over the config's 5


def test_api_callback_gets_progress_records(inputs):
    seen: list[Progress] = []
    convscope.stylize(inputs.content, inputs.style, callback=seen.append, **{**API, "iterations": 3})
    assert [p.iteration for p in seen] == [1, 2, 3]
    assert all(isinstance(p, Progress) and p.iterations == 3 and p.stage == p.stages == 1 for p in seen)
    for p in seen:
        assert_losses(p.terms)
        assert p.loss == p.terms["loss"]
    assert [p.elapsed for p in seen] == sorted(p.elapsed for p in seen)


def test_api_unknown_option_raises_before_any_work(inputs):
    with pytest.raises(ConfigError, match="sise"):
        convscope.stylize(inputs.folder / "missing.png", inputs.style, sise=32)  # typo of size


def test_api_bad_value_raises_config_error(inputs):
    with pytest.raises(ConfigError, match="--size"):
        convscope.stylize(inputs.content, inputs.style, size=0)


def test_api_pil_image_with_alpha_is_treated_like_the_file(inputs):
    rgba = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (16, 0, 32, 32))
    path = inputs.make("logo.png", rgba)
    options = {**API, "style_weight": 0, "tv_weight": 0}
    from_file = convscope.stylize(path, inputs.style, **options)
    assert pixels(from_file)[:, :12].min() >= 250  # the file: transparent is white
    from_image = convscope.stylize(rgba, inputs.style, **options)
    assert np.abs(pixels(from_image) - pixels(from_file)).max() <= 2


# ------------------------------------------------------------------------------------- demo

def test_demo(capsys, tmp_path):
    out = tmp_path / "demo.png"
    r = run(capsys, "demo", "-o", out, "--size", "32", "--iterations", "2", "--device", "cpu", "-q")
    assert r.code == 0, r.err
    img = opened(out)
    assert max(img.size) == 32 and img.size == (27, 32)  # grace_hopper.jpg is 512x600
    meta = sidecar(out)
    assert meta["inputs"]["styles"] == ["<built-in swirl painting>"]
    assert meta["inputs"]["content"].endswith("grace_hopper.jpg")
    assert meta["config"]["iterations"] == 2
    assert names_in(tmp_path) == ["demo.json", "demo.png"]


@pytest.mark.parametrize("extra,fragment", [
    (["--iterations", "5"], "--iterations applies to the gatys method only"),
    (["--style-weight", "3"], "--style-weight applies to the gatys method only"),
    (["--strip"], "--strip applies to the gatys method only"),  # (no strip was written, exit 0)
])
def test_demo_model_refuses_an_optimization_option_it_would_ignore(capsys, tmp_path, extra, fragment):
    r = run(capsys, "demo", "--model", "starry_night", "-o", tmp_path / "d.png", *extra)
    assert_user_error(r, fragment)
    assert names_in(tmp_path) == []


def test_demo_without_model_refuses_the_one_pass_options(capsys, tmp_path):
    r = run(capsys, "demo", "--strength", "0.3", "-o", tmp_path / "d.png", "--size", "32", "--iterations", "2")
    assert_user_error(r, "--strength applies to --model only")
    assert names_in(tmp_path) == []


def test_demo_model_at_the_demo_defaults_is_not_refused(capsys, tmp_path):
    # demo's own --iterations default (120) is not a change from StyleConfig's 500
    r = run(capsys, "demo", "--model", "starry_night", "-o", tmp_path / "d.png", "--size", "48", "-q")
    assert r.code == 0, r.err
    assert max(opened(tmp_path / "d.png").size) == 48


def test_demo_model_names_an_arbitrary_model_as_such(capsys, tmp_path):
    r = run(capsys, "demo", "--model", "adain-lite", "-o", tmp_path / "d.png")
    assert_user_error(r, "adain-lite is an arbitrary-style model", "demo --model takes a feed-forward style")
    assert "--method arbitrary for it" not in r.err  # demo has no --method
    assert names_in(tmp_path) == []


@pytest.mark.parametrize("argv,command", [
    (["demo", "--mask", "x"], "convscope demo --help"),
    (["classify", "evaluate", "run", "--bogus"], "convscope classify evaluate --help"),
    (["--bogus"], "convscope --help"),
])
def test_an_unknown_option_points_at_its_own_commands_help(capsys, argv, command):
    r = run(capsys, *argv)
    assert_user_error(r, "unrecognized arguments", f"(see: {command})")


def test_tuple_defaults_in_help_read_as_typed(capsys):
    r = run(capsys, "train-style", "--help")
    assert r.code == 0
    text = " ".join(r.out.split())
    assert "(default: relu1_1 relu2_1" in text and "('relu1_1'" not in text


@pytest.mark.parametrize("argv", [
    ["activations", "{photo}", "--layer", "relu1_1", "-o", "{photo}"],
    ["stylize", "{photo}", "{style}", "-o", "{style}"],
    ["stylize", "{photo}", "--model", "starry_night", "-o", "{alias}"],   # another path to the same file
    ["stylize", "{folder}", "--model", "starry_night", "-o", "{folder}"],  # a folder run over its inputs
    ["train-style", "{style}", "--content-dir", "{folder}", "--init", "{photo}", "-o", "{photo}"],  # not stylize's
    ["top-activations", "{folder}", "--layer", "relu1_1", "-o", "{photo}"],  # an image of the folder it reads
])
def test_output_that_is_one_of_the_inputs_is_refused_and_the_input_kept(capsys, tmp_path, argv):
    folder = tmp_path / "in"
    folder.mkdir()
    photo, style = folder / "p.png", tmp_path / "s.png"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(photo)
    Image.new("RGB", (40, 30), (200, 10, 30)).save(style)
    before = {p: p.read_bytes() for p in (photo, style)}
    paths = {"photo": photo, "style": style, "folder": folder, "alias": tmp_path / "." / "in" / ".." / "in" / "p.png"}
    r = run(capsys, *[a.format(**paths) for a in argv])
    assert_user_error(r, "is one of this run's inputs", "choose another output name")
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in folder.iterdir()) == ["p.png"]  # no sidecar either


@pytest.mark.parametrize("argv", [
    ["texture", "{meta}", "-o", "{out}.png"],
    ["stylize", "{photo}", "{meta}", "-o", "{out}.png"],
    ["stylize-video", "{meta}", "--model", "starry_night", "-o", "{out}.mp4"],  # the video's name
])
def test_an_output_whose_sidecar_is_one_of_the_inputs_is_refused(capsys, tmp_path, argv):
    # An input named x.json (an image or a video: read by its content) was replaced by -o x.png's
    # metadata sidecar, exit 0.
    photo, meta = tmp_path / "p.png", tmp_path / "x.json"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(photo)
    Image.new("RGB", (40, 30), (200, 10, 30)).save(meta, format="PNG")
    before = meta.read_bytes()
    r = run(capsys, *[a.format(photo=photo, meta=meta, out=tmp_path / "x") for a in argv])
    assert_user_error(r, "would write its metadata (x.json) over one of this run's inputs", "choose another")
    assert meta.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["p.png", "x.json"]


def test_ctrl_c_while_starting_up_is_one_line_not_a_traceback(capsys, monkeypatch):
    def pressed():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", pressed)
    r = run(capsys, "styles")
    assert r.code == 130 and "Traceback" not in r.err and r.err.strip() == "convscope: interrupted"


def test_no_command_prints_help_and_returns_2(capsys):
    r = run(capsys)
    assert r.code == 2 and "stylize" in r.err and "Traceback" not in r.err


def test_python_dash_m_runs_the_cli(monkeypatch, capsys):
    import runpy

    monkeypatch.setattr("sys.argv", ["convscope", "styles", "--json"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_module("convscope", run_name="__main__")
    assert stop.value.code == 0
    assert any(row["name"] == "starry_night" for row in json.loads(capsys.readouterr().out))
    monkeypatch.setattr("sys.argv", ["convscope", "stylize", "missing.jpg", "--model", "nope", "-o", "x.png"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_module("convscope", run_name="__main__")
    assert stop.value.code == 2 and "unknown style model" in capsys.readouterr().err


def _command_paths(parser, prefix=()):
    """Every (sub)command of `parser` as an argv prefix: ('stylize',), ('classify', 'train'), ..."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _command_paths(sub, (*prefix, name))


def test_every_command_has_help(capsys):
    # Help texts from config metadata contain '%' ("at 50% and 75%"); argparse once read them as
    # format specifiers and --help of dream, invert, train-style, classify train... raised TypeError.
    paths = list(_command_paths(cli.build_parser()))
    assert ("classify", "train") in paths and ("dream",) in paths
    for path in paths:
        r = run(capsys, *path, "--help")
        assert r.code == 0 and r.out.startswith("usage: convscope " + " ".join(path)), path
    r = run(capsys, "classify", "train", "--help")
    assert "50% and" in r.out and "%%" not in r.out


@pytest.mark.parametrize("command, says, not_said", [
    # These descriptions predated --net on every command and --rule auto (guided backprop where no
    # max pooling runs before the layer), and export-onnx's dynamic batch.
    ("dream", "the patterns a layer of --net", "VGG layer"),
    ("texture", "VGG19's by default, any --net's", "whose VGG feature correlations"),
    ("top-activations", "else guided backprop's", "next to the deconvnet projection"),
    ("export-onnx", "dynamic batch, height and width", "dynamic height and width"),
])
def test_help_describes_what_the_command_does(capsys, command, says, not_said):
    r = run(capsys, command, "--help")
    text = " ".join(r.out.split())
    assert r.code == 0 and says in text and not_said not in text


@pytest.mark.parametrize("command", ["activations", "featureviz", "classviz", "explain", "top-activations", "dream",
                                     "invert", "texture"])
def test_net_help_says_a_classify_run_folder_is_a_net(capsys, command):
    # Every one of them takes a run folder as --net; most --help texts named only the bundled nets.
    r = run(capsys, command, "--help")
    text = " ".join(r.out.split())
    net = text[text.index("--net NET ", text.index("options:")):]
    assert r.code == 0 and "classify run folder" in net[:400], net[:400]


def test_help_and_option_errors_never_import_torch():
    # Importing torch takes seconds; --help of every command, and argparse's one-line errors, come
    # from the config dataclasses alone, so they must not wait for it. A fresh interpreter: this
    # process has torch loaded already.
    script = """
import contextlib, io, sys
from convscope import cli
paths = []
def walk(parser, prefix=()):
    import argparse
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append((*prefix, name))
                walk(sub, (*prefix, name))
walk(cli.build_parser())
codes = []
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    for path in paths:
        codes.append(cli.main([*path, "--help"]))
    codes.append(cli.main(["stylize", "a.jpg", "b.jpg", "--iterations", "many"]))
    codes.append(cli.main(["classify", "train", "--epochs", "x"]))
    codes.append(cli.main(["dream", "a.jpg", "--no-such-option"]))
import json
print(json.dumps({"paths": len(paths), "codes": codes,
                  "torch": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))}))
"""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["paths"] >= 20
    assert seen["codes"] == [0] * seen["paths"] + [2, 2, 2]
    assert seen["torch"] == [], f"torch was imported: {seen['torch'][:5]}"


def test_wrong_paths_and_values_are_answered_before_torch_loads(tmp_path):
    # A missing input (image, folder, run) and a value its config's validate() refuses are found
    # before PyTorch loads (seconds): the same one line and exit code 2 as ever, at once. A fresh
    # interpreter: this process has torch loaded already.
    photo = tmp_path / "photo.png"
    Image.new("RGB", (8, 8), (200, 120, 40)).save(photo)
    missing, out = str(tmp_path / "missing.jpg"), str(tmp_path / "out.png")
    cases = [  # argv, what the one line says
        (["stylize", missing, str(photo), "-o", out], f"image not found: {missing}; check the path"),
        (["stylize", str(photo), missing, "-o", out], f"image not found: {missing}; check the path"),
        (["dream", missing, "-o", out], f"image not found: {missing}; check the path"),
        (["dream", str(photo), "--guide", str(tmp_path), "-o", out], f"image not found: {tmp_path} is a folder"),
        (["activations", missing, "--layer", "relu2_1", "-o", out], f"image not found: {missing}"),
        (["explain", missing, "-o", out], f"image not found: {missing}"),
        (["invert", missing, "--layer", "relu2_1", "-o", out], f"image not found: {missing}"),
        (["texture", missing, "-o", out], f"image not found: {missing}"),
        (["top-activations", str(tmp_path / "nofolder"), "-o", out], "folder not found"),
        (["classify", "evaluate", str(tmp_path / "NOT_A_RUN")], "is not a run folder"),
        (["classify", "predict", str(tmp_path / "NOT_A_RUN"), str(photo)], "is not a run folder"),
        (["classify", "predict", "--net", "efficientnet_lite0", missing], f"{missing}: no such file or folder"),
        (["activations", str(photo), "--max-channels", "0", "-o", out],
         "--max-channels must be a positive whole number, not 0"),
        (["dream", str(photo), "--octaves", "0", "-o", out], "--octaves must be a whole number from 1 to 20, not 0"),
        (["texture", str(photo), "--iterations", "0", "-o", out], "--iterations must be a positive number"),
        (["stylize", str(photo), str(photo), "--style-blend", "1", "2", "-o", out], "--style-blend has 2 weight(s)"),
        (["featureviz", "--channels", "9-1", "-o", out], "runs backwards"),
        # an unknown net: checked against torchvision's names as its source files give them
        (["stylize", str(photo), str(photo), "--net", "vgg91", "-o", out], "unknown net 'vgg91' (did you mean 'vgg19'?)"),
        (["activations", str(photo), "--net", "resnet181", "-o", out], "unknown net 'resnet181' (did you mean 'resnet18'?)"),
        (["layers", "--net", "resnet-fats"], "unknown net 'resnet-fats'"),
        (["featureviz", "--net", "nope", "-o", out], "unknown net 'nope'; choose from vgg19"),
        (["classify", "predict", "--net", "resnt50", str(photo)], "(did you mean 'resnet50'?)"),
    ]
    script = """
import contextlib, io, json, sys
from convscope import cli
seen = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    seen.append([code, err.getvalue()])
print(json.dumps({"seen": seen, "torch": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))}))
"""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", script, json.dumps([argv for argv, _ in cases])],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for (argv, says), (code, err) in zip(cases, result["seen"]):
        assert code == 2 and err.count("\n") == 1 and err.startswith("convscope: error: ") and says in err, (argv, err)
    assert result["torch"] == [], f"torch was imported: {result['torch'][:5]}"
    assert list(tmp_path.iterdir()) == [photo]  # nothing written, no output folder made


def test_every_config_with_a_seed_refuses_one_torch_cannot_take():
    # dream, invert, texture, featureviz, classviz and classify train passed seeds over 2**63 - 1
    # through validate() to torch's manual_seed: "ValueError: Overflow when unpacking long long".
    import dataclasses
    import importlib
    import pkgutil

    from convscope.options import SEED_MAX

    found = []
    for info in pkgutil.walk_packages(convscope.__path__, "convscope."):
        if info.name.startswith("convscope.web") or info.name == "convscope.__main__":
            continue  # web needs gradio (its options are these configs); __main__ runs the CLI
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == module.__name__
                    and hasattr(obj, "validate") and any(f.name == "seed" for f in dataclasses.fields(obj))):
                found.append(obj)
    assert len(found) >= 8, found
    for cls in found:
        needed = {"target_class": "1"} if "target_class" in cls.__dataclass_fields__ else {}  # classviz
        for seed in (-1, SEED_MAX + 1, 10**23):
            with pytest.raises(ConfigError, match="--seed must be a whole number from 0"):
                cls(seed=seed, **needed).validate()
        cls(seed=SEED_MAX, **needed).validate()


def test_a_huge_seed_is_one_line(capsys, inputs):
    r = run(capsys, "dream", inputs.content, "-o", inputs.out_dir / "d.png", "--size", "32", "--steps", "1",
            "--octaves", "1", "--device", "cpu", "-q", "--seed", str(10**23))
    assert_user_error(r, "--seed", str(10**23))
    assert_empty(inputs.out_dir)


def test_styles_lists_the_models_without_torch():
    # `convscope styles` reads the model files' headers only: no torch (1.9-3.3 s of start-up before).
    # A fresh interpreter: this process has torch loaded already.
    script = """
import contextlib, io, json, sys
from convscope import cli
out = io.StringIO()
with contextlib.redirect_stdout(out):
    codes = [cli.main(["styles"]), cli.main(["styles", "--json"])]
print(json.dumps({"codes": codes, "out": out.getvalue(),
                  "torch": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))}))
"""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["codes"] == [0, 0]
    assert "starry_night" in seen["out"] and '"painting": "Vincent van Gogh' in seen["out"]
    assert seen["torch"] == [], f"torch was imported: {seen['torch'][:5]}"


@pytest.mark.parametrize("source, extra", [("tx_0002.png", ["--save-every", "2"]),
                                           ("tx_progress.png", ["--strip"])])
def test_a_frame_or_strip_that_would_replace_an_input_is_refused_before_the_run(capsys, tmp_path, source, extra):
    src = tmp_path / source
    Image.new("RGB", (24, 24), (10, 200, 30)).save(src)
    before = src.read_bytes()
    r = run(capsys, "texture", str(src), "-o", str(tmp_path / "tx.png"), "--size", "16", "16", "--iterations", "3",
            "--device", "cpu", "-q", *extra)
    assert_user_error(r, "is one of this run's inputs", "choose another output name")
    assert src.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [source]

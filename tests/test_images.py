"""Tests for convscope.images: every image here is tiny and generated in tmp_path."""

import errno
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile, TiffImagePlugin

from convscope import images
from convscope.errors import ConfigError, ImageError, OutputError, UserError
from convscope.images import (
    check_output_path,
    load_image,
    luminance_transfer,
    match_color_stats,
    match_histogram,
    pil_to_tensor,
    read_png_metadata,
    resize_long_side,
    resize_to_pixels,
    rgb_to_yiq,
    save_image,
    sidecar_path,
    tensor_to_pil,
    yiq_to_rgb,
)


def _noise(w=16, h=12, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    return Image.fromarray(rng.integers(0, 256, (h, w, channels), dtype=np.uint8), mode)


def _pixels(img):
    return np.asarray(img).astype(int)


def _png_bytes(width, height):
    """A syntactically valid RGB PNG whose IHDR claims width x height but holds one tiny IDAT."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def _one_line_error(excinfo, *needles):
    msg = str(excinfo.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


# ------------------------------------------------------------------------------ bad inputs

def test_missing_file(tmp_path):
    path = tmp_path / "nope.jpg"
    with pytest.raises(ImageError) as e:
        load_image(path)
    _one_line_error(e, "not found", str(path))


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(ImageError) as e:
        load_image(tmp_path)
    _one_line_error(e, "not found", "folder", str(tmp_path))


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError) as e:
        load_image(path)
    _one_line_error(e, "empty", str(path))


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageError) as e:
        load_image(path)
    _one_line_error(e, "not an image", str(path))


def test_truncated_jpeg(tmp_path):
    path = tmp_path / "cut.jpg"
    buf = io.BytesIO()
    _noise(64, 64).save(buf, "JPEG", quality=90)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError) as e:
        load_image(path)
    _one_line_error(e, "truncated or corrupt", str(path))
    # not PIL's "image file is truncated (...)" again inside (the path, a test's folder, says it too)
    assert str(e.value).replace(str(path), "").count("truncated") == 1
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # we never flip PIL's global switch


def test_truncated_jpeg_opened_by_the_caller_is_an_image_error(tmp_path):
    # The API takes PIL images: one from Image.open decodes only in to_rgb, where PIL's raw
    # OSError ("image file is truncated") escaped instead of the one-line ImageError.
    path = tmp_path / "cut.jpg"
    buf = io.BytesIO()
    _noise(64, 64).save(buf, "JPEG", quality=90)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with Image.open(path) as im, pytest.raises(ImageError) as e:
        images.to_rgb(im)
    _one_line_error(e, "truncated or corrupt", str(path))
    _noise().save(tmp_path / "fine.png")
    with Image.open(tmp_path / "fine.png") as fine:
        pass
    closed = Image.open(tmp_path / "fine.png")
    closed.close()
    for im in (fine, closed):  # closed by the caller: not "corrupt", the file is fine
        with pytest.raises(ImageError, match="was closed before it was used"):
            images.to_rgb(im)


def test_truncated_and_corrupt_png(tmp_path):
    buf = io.BytesIO()
    _noise(64, 64).save(buf, "PNG")
    data = buf.getvalue()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    corrupt = tmp_path / "corrupt.png"
    middle = len(data) // 2
    corrupt.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) + data[middle + 64:])
    for path in (cut, corrupt):
        with pytest.raises(ImageError) as e:
            load_image(path)
        _one_line_error(e, "truncated or corrupt", str(path))


def test_header_claiming_30000_squared_fails_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_bytes(30000, 30000))
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded a bomb"))
    with pytest.raises(ImageError) as e:
        load_image(path)
    _one_line_error(e, "too large", "900,000,000", f"{images.DEFAULT_MAX_PIXELS:,}", str(path))


def test_max_pixels_checked_from_header(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    path.write_bytes(_png_bytes(2000, 2000))  # under PIL's own limit: our check must catch it
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded before the check"))
    with pytest.raises(ImageError) as e:
        load_image(path, max_pixels=1_000_000)
    _one_line_error(e, "2000x2000", "4,000,000", "1,000,000")


def test_max_pixels_boundary_and_bad_value(tmp_path):
    path = tmp_path / "small.png"
    _noise(20, 20).save(path)
    assert load_image(path, max_pixels=400).size == (20, 20)
    with pytest.raises(ImageError):
        load_image(path, max_pixels=399)
    with pytest.raises(ConfigError):
        load_image(path, max_pixels=0)


# ------------------------------------------------------------------------- modes and formats

def test_one_by_one_image(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (10, 20, 30)).save(path)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (1, 1)
    assert img.getpixel((0, 0)) == (10, 20, 30)


def test_16bit_png_is_rescaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(path)
    img = load_image(path)
    assert img.mode == "RGB"
    assert _pixels(img)[0, :, 0].tolist() == [0, 1, 128, 255]
    assert np.all(_pixels(img) == _pixels(img)[:, :, :1])


def test_16bit_png_transparent_grey_level_is_white_not_black(tmp_path):
    # A 16-bit grey PNG's tRNS chunk names one transparent level; it came out black, not white.
    path = tmp_path / "deep_trns.png"
    Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16)).save(path, transparency=0)
    assert Image.open(path).info.get("transparency") == 0  # the file holds a tRNS chunk
    assert _pixels(load_image(path))[0, :, 0].tolist() == [255, 128, 255]


def test_16bit_min_is_white_tiff_is_not_inverted(tmp_path):
    # PIL inverts an 8-bit TIFF stored min-is-white (photometric 0) but not a 16-bit one: it loaded
    # as a negative, its black paper white.
    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    ifd[262] = 0  # PhotometricInterpretation: WhiteIsZero
    path = tmp_path / "scan.tif"
    Image.fromarray(np.array([[0, 257, 65535]], dtype=np.uint16)).save(path, tiffinfo=ifd)
    assert Image.open(path).tag_v2[262] == 0
    assert _pixels(load_image(path))[0, :, 0].tolist() == [255, 254, 0]
    with Image.open(path) as im:
        assert _pixels(images.to_rgb(im))[0, :, 0].tolist() == [255, 254, 0]


def test_i16_big_endian_and_32bit_int_modes():
    big = Image.frombytes("I;16B", (2, 1), struct.pack(">HH", 32768, 65535))
    assert (pil_to_tensor(big)[0, :, 0, :] * 255).round().tolist() == [[128, 255]] * 3
    wide = Image.fromarray(np.array([[65535, 0]], dtype=np.int32))
    assert wide.mode == "I"
    assert (pil_to_tensor(wide)[0, 0, 0] * 255).round().tolist() == [255, 0]


def test_float_images_in_both_conventions(tmp_path):
    unit = tmp_path / "unit.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(unit)
    assert _pixels(load_image(unit))[0, :, 1].tolist() == [0, 128, 255]
    byte_scale = tmp_path / "byte.tif"
    Image.fromarray(np.array([[0.0, 100.0, 300.0]], dtype=np.float32)).save(byte_scale)
    assert _pixels(load_image(byte_scale))[0, :, 2].tolist() == [0, 100, 255]
    # A [0, 1] image a filter left slightly below 0 was read as 0..255: all black.
    undershoot = tmp_path / "undershoot.tif"
    Image.fromarray(np.array([[-0.001, 0.5, 1.0]], dtype=np.float32)).save(undershoot)
    assert _pixels(load_image(undershoot))[0, :, 0].tolist() == [0, 128, 255]


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "print.jpg"
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red ink-wise
    cmyk.paste((0, 0, 0, 0), (0, 0, 4, 8))  # left half: no ink = white
    cmyk.save(path, quality=100)
    img = load_image(path)
    assert img.mode == "RGB"
    assert np.abs(_pixels(img)[4, 1] - [255, 255, 255]).max() <= 8
    assert np.abs(_pixels(img)[4, 6] - [255, 0, 0]).max() <= 8


def test_palette_png_with_transparency(tmp_path):
    path = tmp_path / "pal.png"
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 0, 200, 50] + [0] * (256 * 3 - 6))
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    pal.save(path, transparency=0)
    img = load_image(path)
    assert img.getpixel((0, 0)) == (255, 255, 255)  # transparent -> white, not palette black
    assert img.getpixel((1, 0)) == (0, 200, 50)


def test_rgba_and_la_are_composited_over_white(tmp_path):
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(255, 0, 0, 0), (255, 0, 0, 255), (0, 0, 0, 128)])
    rgba.save(tmp_path / "a.png")
    got = _pixels(load_image(tmp_path / "a.png"))[0]
    assert got[0].tolist() == [255, 255, 255]
    assert got[1].tolist() == [255, 0, 0]
    assert np.abs(got[2] - 127).max() <= 1

    la = Image.new("LA", (3, 1))
    la.putdata([(0, 0), (0, 255), (0, 128)])
    la.save(tmp_path / "la.png")
    got = _pixels(load_image(tmp_path / "la.png"))[0]
    assert got[0].tolist() == [255, 255, 255] and got[1].tolist() == [0, 0, 0]
    assert np.abs(got[2] - 127).max() <= 1


def test_grayscale_and_bilevel_become_three_equal_channels(tmp_path):
    gray = Image.fromarray(np.array([[0, 77, 200]], dtype=np.uint8))
    gray.save(tmp_path / "g.png")
    got = _pixels(load_image(tmp_path / "g.png"))
    assert got.shape == (1, 3, 3)
    assert got[0, :, 0].tolist() == [0, 77, 200]
    assert np.all(got == got[:, :, :1])
    bilevel = Image.new("1", (2, 1))
    bilevel.putpixel((1, 0), 1)
    bilevel.save(tmp_path / "b.png")
    assert _pixels(load_image(tmp_path / "b.png"))[0].tolist() == [[0, 0, 0], [255, 255, 255]]


@pytest.mark.parametrize("mode,value,expected", [
    ("HSV", (0, 255, 255), (255, 0, 0)),
    ("YCbCr", (76, 85, 255), (254, 0, 0)),
    ("LAB", (255, 128, 128), (255, 255, 255)),
])
def test_colour_space_modes(mode, value, expected):
    got = (pil_to_tensor(Image.new(mode, (1, 1), value))[0, :, 0, 0] * 255).round()
    assert (got - torch.tensor(expected, dtype=got.dtype)).abs().max() <= 2


def test_premultiplied_alpha_modes_come_out_over_white():
    # In-memory "La" (no file format stores it) raised PIL's raw "conversion from La to L not supported".
    from convscope.images import to_rgb

    for mode, value in (("La", (100, 0)), ("La", (100, 255)), ("RGBa", (100, 100, 100, 0))):
        got = to_rgb(Image.new(mode, (2, 2), value)).getpixel((0, 0))
        assert got == ((255,) * 3 if value[-1] == 0 else (100,) * 3), (mode, value, got)


@pytest.mark.parametrize("orientation,expected_xy", [(6, (1, 0)), (8, (0, 3))])
def test_exif_orientation_is_applied(tmp_path, orientation, expected_xy):
    path = tmp_path / "phone.jpg"
    photo = Image.new("RGB", (4, 2), (0, 0, 255))
    photo.putpixel((0, 0), (255, 0, 0))  # mark the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    photo.save(path, quality=100, subsampling=0, exif=exif.tobytes())
    img = load_image(path)
    assert img.size == (2, 4)
    red = [(x, y) for y in range(4) for x in range(2) if img.getpixel((x, y))[0] > 150]
    assert red == [expected_xy]


def damaged_exif_jpeg(path: Path) -> Path:
    """A 4x2 JPEG whose EXIF block holds Orientation 6 and then breaks off inside the next tag
    (PIL warns "Corrupt EXIF data" when it opens the file and again when it reads the tags)."""
    tags = struct.pack("<H", 2) + struct.pack("<HHLHH", 0x0112, 3, 1, 6, 0) + b"\0" * 6
    Image.new("RGB", (4, 2), (0, 0, 255)).save(path, quality=100, exif=b"Exif\0\0II*\0" + struct.pack("<I", 8) + tags)
    return path


def test_damaged_exif_is_ignored_quietly(tmp_path):
    # PIL's "Corrupt EXIF data" UserWarning reached stderr (a web server's log) though the image
    # decodes: the tags read before the damage (the orientation here) still apply.
    path = damaged_exif_jpeg(tmp_path / "phone.jpg")
    with pytest.warns(UserWarning, match="Corrupt EXIF data"):  # PIL's own behaviour, on its own
        Image.open(path).close()
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img = load_image(path)
        assert [str(w.message) for w in caught] == []
        with Image.open(path) as opened:  # warns here, outside convscope: the caller's own call
            caught.clear()
            again = images.to_rgb(opened)
    assert img.size == again.size == (2, 4) and img.getpixel((0, 0))[2] > 200
    assert [str(w.message) for w in caught] == []


def test_animated_gif_and_multipage_tiff_give_first_frame(tmp_path):
    first, second = Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))
    for name in ("anim.gif", "pages.tif"):
        first.save(tmp_path / name, save_all=True, append_images=[second], duration=100)
        with Image.open(tmp_path / name) as check:
            assert check.n_frames == 2
        assert load_image(tmp_path / name).getpixel((2, 2)) == (255, 0, 0)


@pytest.mark.parametrize("name,options", [
    ("x.webp", {"lossless": True}), ("x.bmp", {}), ("x.tif", {}), ("x.png", {}), ("x.gif", {}),
])
def test_lossless_formats_round_trip(tmp_path, name, options):
    img = _noise()
    if name.endswith(".gif"):  # GIF is palette-based: use few colours so it stays exact
        img = img.quantize(8).convert("RGB")
    img.save(tmp_path / name, **options)
    assert np.array_equal(_pixels(load_image(tmp_path / name)), _pixels(img))


def test_returned_image_is_decoded_and_detached_from_file(tmp_path):
    path = tmp_path / "x.png"
    _noise().save(path)
    img = load_image(path)
    path.unlink()  # a lazily loaded image would fail from here on
    assert img.copy().size == (16, 12) and img.getpixel((0, 0)) == _noise().getpixel((0, 0))


# ---------------------------------------------------------------------------------- resizing

def test_resize_long_side_keeps_aspect_and_filter():
    img = _noise(40, 20)
    small = resize_long_side(img, 10)
    assert small.size == (10, 5)
    assert np.array_equal(_pixels(small), _pixels(img.resize((10, 5), Image.Resampling.LANCZOS)))
    big = resize_long_side(_noise(10, 20), 40)
    assert big.size == (20, 40)
    assert np.array_equal(_pixels(big), _pixels(_noise(10, 20).resize((20, 40), Image.Resampling.BICUBIC)))
    assert resize_long_side(img, 40).size == (40, 20)


def test_resize_to_pixels():
    assert resize_to_pixels(_noise(40, 20), 200).size == (20, 10)
    out = resize_to_pixels(_noise(30, 17), 50_000)
    assert abs(out.width * out.height - 50_000) / 50_000 < 0.02
    assert abs(out.width / out.height - 30 / 17) < 0.02


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "10"])
def test_resize_bad_size(bad):
    with pytest.raises(ConfigError):
        resize_long_side(_noise(), bad)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), None])
def test_resize_bad_pixels(bad):
    with pytest.raises(ConfigError):
        resize_to_pixels(_noise(), bad)


def test_resize_too_thin():
    with pytest.raises(ImageError, match="less than 1 px"):
        resize_long_side(_noise(100, 1), 10)
    with pytest.raises(ImageError, match="less than 1 px"):
        resize_to_pixels(_noise(1000, 1), 10)


# ------------------------------------------------------------------------------------ tensors

def test_tensor_round_trip_is_exact():
    img = _noise(7, 5)
    t = pil_to_tensor(img)
    assert t.shape == (1, 3, 5, 7) and t.dtype == torch.float32
    assert 0.0 <= t.min() and t.max() <= 1.0
    assert torch.allclose(t[0, :, 2, 3] * 255, torch.tensor(img.getpixel((3, 2)), dtype=torch.float32))
    assert np.array_equal(_pixels(tensor_to_pil(t)), _pixels(img))
    assert np.array_equal(_pixels(tensor_to_pil(t[0])), _pixels(img))
    assert pil_to_tensor(img, device="cpu", dtype=torch.float64).dtype == torch.float64


def test_tensor_to_pil_clamps_rounds_and_ignores_grad():
    t = torch.tensor([-1.0, 2.0, float("nan"), 0.5 / 255 + 1e-4]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    t = t.clone().requires_grad_(True)
    assert _pixels(tensor_to_pil(t))[0, :, 0].tolist() == [0, 255, 0, 1]


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (1, 4, 4, 4), (4, 4)])
def test_tensor_to_pil_bad_shapes(shape):
    with pytest.raises(ValueError):
        tensor_to_pil(torch.zeros(shape))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tensor_round_trip_on_cuda():
    img = _noise()
    t = pil_to_tensor(img, device="cuda")
    assert t.is_cuda
    assert np.array_equal(_pixels(tensor_to_pil(t)), _pixels(img))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_colour_ops_on_cuda_match_cpu():
    gen = torch.Generator().manual_seed(6)
    a, b = torch.rand(2, 3, 8, 8, generator=gen), torch.rand(1, 3, 6, 5, generator=gen)
    for op in (luminance_transfer, match_histogram, match_color_stats):
        got = op(a.cuda(), b.cuda())
        assert got.is_cuda
        assert torch.allclose(got.cpu(), op(a, b), atol=1e-5), op.__name__


# --------------------------------------------------------------------------------- colour ops

def test_yiq_round_trip_and_known_values():
    x = torch.rand(2, 3, 5, 6, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(yiq_to_rgb(rgb_to_yiq(x)), x, atol=1e-5)
    white = rgb_to_yiq(torch.ones(1, 3, 1, 1))[0, :, 0, 0]
    assert torch.allclose(white, torch.tensor([1.0, 0.0, 0.0]), atol=1e-5)
    red = rgb_to_yiq(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))[0, :, 0, 0]
    assert torch.allclose(red, torch.tensor([0.299, 0.595716, 0.211456]), atol=1e-6)


def test_luminance_transfer_keeps_y_of_stylized_and_iq_of_content():
    gen = torch.Generator().manual_seed(1)
    stylized = 0.3 + 0.4 * torch.rand(1, 3, 8, 10, generator=gen)
    content = 0.4 + 0.2 * torch.rand(1, 3, 8, 10, generator=gen)
    out = luminance_transfer(stylized, content)
    assert out.shape == stylized.shape and out.min() > 0 and out.max() < 1  # nothing clamped
    assert torch.allclose(rgb_to_yiq(out)[:, :1], rgb_to_yiq(stylized)[:, :1], atol=1e-5)
    assert torch.allclose(rgb_to_yiq(out)[:, 1:], rgb_to_yiq(content)[:, 1:], atol=1e-5)


def test_luminance_transfer_resizes_content_and_clamps():
    stylized = torch.full((2, 3, 6, 6), 0.5)
    content = torch.tensor([0.8, 0.3, 0.2]).view(1, 3, 1, 1).expand(1, 3, 3, 4)  # one colour
    out = luminance_transfer(stylized, content)
    assert out.shape == (2, 3, 6, 6)
    expected_iq = rgb_to_yiq(content[:, :, :1, :1])[0, 1:, 0, 0]
    assert torch.allclose(rgb_to_yiq(out)[:, 1:, 3, 3], expected_iq.expand(2, 2), atol=1e-5)
    assert luminance_transfer(torch.ones(1, 3, 2, 2), content).max() <= 1.0


def test_match_histogram_same_size_gives_reference_values_in_source_order():
    gen = torch.Generator().manual_seed(2)
    source, reference = torch.rand(1, 3, 6, 7, generator=gen), torch.rand(1, 3, 6, 7, generator=gen) ** 3
    out = match_histogram(source, reference)
    for c in range(3):
        assert torch.equal(out[0, c].flatten().sort().values, reference[0, c].flatten().sort().values)
        assert torch.equal(out[0, c].flatten().argsort(), source[0, c].flatten().argsort())


def test_match_histogram_different_sizes_and_batch():
    gen = torch.Generator().manual_seed(3)
    source = torch.rand(2, 3, 9, 9, generator=gen)
    reference = 0.2 + 0.5 * torch.rand(1, 3, 4, 5, generator=gen)
    out = match_histogram(source, reference)
    assert out.shape == source.shape
    for c in range(3):
        assert torch.isclose(out[:, c].amin(), reference[0, c].min())
        assert torch.isclose(out[:, c].amax(), reference[0, c].max())
        assert torch.isclose(out[0, c].median(), reference[0, c].median(), atol=0.05)
    with pytest.raises(ValueError):
        match_histogram(source, torch.rand(3, 3, 4, 4))


@pytest.mark.parametrize("method", ["eigen", "cholesky"])
def test_match_color_stats_gives_reference_mean_and_covariance(method):
    gen = torch.Generator().manual_seed(4)
    source = 0.5 + 0.1 * torch.randn(1, 3, 32, 32, generator=gen).clamp(-2, 2)
    mix = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, -0.3], [0.2, 0.0, 1.0]])
    reference = 0.45 + 0.05 * torch.einsum("ij,njhw->nihw", mix, torch.randn(1, 3, 20, 20, generator=gen))

    def stats(x):
        flat = x[0].flatten(1).double()
        return flat.mean(1), torch.cov(flat, correction=0)

    out = match_color_stats(source, reference, method=method, eps=0.0)
    assert 0 < out.min() and out.max() < 1  # nothing clamped, so stats must match
    (mu_o, cov_o), (mu_r, cov_r) = stats(out), stats(reference)
    assert torch.allclose(mu_o, mu_r, atol=1e-5)
    assert torch.allclose(cov_o, cov_r, atol=1e-6)
    assert not torch.allclose(stats(source)[1], cov_r, atol=1e-4)


def test_match_color_stats_flat_source_and_bad_method():
    flat = torch.full((1, 3, 4, 4), 0.2)
    reference = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    out = match_color_stats(flat, reference)
    assert torch.isfinite(out).all()
    assert torch.allclose(out[0, :, 0, 0], reference[0].flatten(1).mean(1), atol=1e-4)
    with pytest.raises(ConfigError):
        match_color_stats(flat, reference, method="magic")


# ------------------------------------------------------------------------------------ saving

def _no_temp_files(folder: Path, *expected):
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected)


def test_save_png_with_metadata_chunk_and_sidecar(tmp_path):
    meta = {"method": "gatys", "seed": 7, "weights": [1.0, 0.5], "out": tmp_path / "o.png"}
    path = save_image(_noise(), tmp_path / "out.png", metadata=meta)
    assert path == tmp_path / "out.png"
    expected = dict(meta, out=str(meta["out"]))  # non-JSON types are written with str()
    assert read_png_metadata(path) == expected
    side = sidecar_path(path)
    assert side == tmp_path / "out.json"
    assert json.loads(side.read_text()) == expected
    assert side.read_text().startswith('{\n  "method"')  # indent=2
    assert np.array_equal(_pixels(load_image(path)), _pixels(_noise()))
    _no_temp_files(tmp_path, "out.png", "out.json")


def test_save_without_metadata_writes_no_sidecar(tmp_path):
    save_image(_noise(), tmp_path / "plain.png")
    assert read_png_metadata(tmp_path / "plain.png") is None
    _no_temp_files(tmp_path, "plain.png")


def test_save_tensor_in_every_format(tmp_path):
    yy, xx = np.mgrid[0:16, 0:16]  # smooth: lossy codecs keep it to within a few levels
    img = Image.fromarray(np.stack([xx * 16, yy * 16, 255 - xx * 8], axis=2).astype(np.uint8))
    t = pil_to_tensor(img)
    for name, tol in [("a.jpg", 3), ("a.jpeg", 3), ("a.webp", 3), ("a.bmp", 0), ("a.tif", 0), ("a.TIFF", 0)]:
        save_image(t, tmp_path / name, metadata={"k": 1})
        assert np.abs(_pixels(load_image(tmp_path / name)) - _pixels(img)).mean() <= tol
        assert read_png_metadata(tmp_path / name) is None  # metadata chunk is for PNG only
    assert (tmp_path / "a.json").exists()


def test_save_rgba_to_jpeg_composites_over_white(tmp_path):
    save_image(Image.new("RGBA", (4, 4), (0, 0, 0, 0)), tmp_path / "clear.jpg")
    assert _pixels(load_image(tmp_path / "clear.jpg")).min() >= 250


def test_saved_file_permissions_follow_umask(tmp_path):
    umask = os.umask(0o022)
    try:
        save_image(_noise(), tmp_path / "perm.png")
    finally:
        os.umask(umask)
    assert (tmp_path / "perm.png").stat().st_mode & 0o777 == 0o644


def test_existing_file_is_replaced_intact(tmp_path):
    path = tmp_path / "out.png"
    save_image(_noise(seed=1), path)
    save_image(_noise(seed=2), path)
    assert np.array_equal(_pixels(load_image(path)), _pixels(_noise(seed=2)))
    _no_temp_files(tmp_path, "out.png")


@pytest.mark.parametrize("failure,expected", [
    (OSError(errno.ENOSPC, "No space left on device"), OutputError),
    (KeyboardInterrupt(), KeyboardInterrupt),
])
def test_failure_mid_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch, failure, expected):
    path = tmp_path / "out.png"
    save_image(_noise(seed=1), path)
    before = path.read_bytes()

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG half an image")
        raise failure

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(expected) as e:
        save_image(_noise(seed=2), path, metadata={"a": 1})
    if expected is OutputError:
        _one_line_error(e, str(path), "No space left")
    assert path.read_bytes() == before
    _no_temp_files(tmp_path, "out.png")


def test_output_folder_missing(tmp_path):
    with pytest.raises(OutputError) as e:
        save_image(_noise(), tmp_path / "nowhere" / "out.png")
    _one_line_error(e, "does not exist", str(tmp_path / "nowhere"))


@pytest.mark.parametrize("name", ["out.gif", "out", "out.txt"])
def test_unknown_extension(tmp_path, name):
    with pytest.raises(OutputError) as e:
        check_output_path(tmp_path / name)
    _one_line_error(e, "extension", ".png")


def test_output_path_is_a_folder(tmp_path):
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(OutputError, match="folder"):
        check_output_path(tmp_path / "dir.png")


def test_sidecar_path_is_a_folder(tmp_path):
    # The image used to be written and only then the sidecar refused: a failed run with an output.
    (tmp_path / "out.json").mkdir()
    old = tmp_path / "out.png"
    save_image(_noise(seed=1), old)
    before = old.read_bytes()
    with pytest.raises(OutputError) as e:
        save_image(_noise(seed=2), old, metadata={"a": 1})
    _one_line_error(e, "folder", str(tmp_path / "out.json"))
    assert old.read_bytes() == before
    _no_temp_files(tmp_path, "out.png", "out.json")
    with pytest.raises(OutputError, match="folder"):
        check_output_path(tmp_path / "out.png")  # checked before any long work, too
    save_image(_noise(seed=2), old)  # no metadata: no sidecar, nothing in the way
    assert check_output_path(tmp_path / "out.png", sidecar=False) == tmp_path / "out.png"


def test_output_folder_not_writable(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        try:  # root ignores the mode bits: then make os.access report what a user would see
            (locked / "probe").write_bytes(b"")
            (locked / "probe").unlink()
            real_access = os.access
            monkeypatch.setattr(
                os, "access", lambda p, m, **kw: False if Path(p) == locked else real_access(p, m, **kw)
            )
        except PermissionError:
            pass
        with pytest.raises(OutputError) as e:
            save_image(_noise(), locked / "out.png")
        _one_line_error(e, "not writable", str(locked))
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_output_probe_failure_is_reported(tmp_path, monkeypatch):
    # os.access says yes but creating a file fails (read-only mount, ACLs): the probe catches it.
    def refuse(folder, prefix):
        raise PermissionError(errno.EACCES, "Permission denied")

    from convscope import imagefiles  # where the probe's temp files are made (images re-exports the check)

    monkeypatch.setattr(imagefiles, "_create_temp", refuse)
    with pytest.raises(OutputError) as e:
        check_output_path(tmp_path / "out.png")
    _one_line_error(e, "not writable", "Permission denied")


def test_check_output_path_accepts_good_paths_and_leaves_nothing(tmp_path):
    assert check_output_path(str(tmp_path / "x.JPG")) == tmp_path / "x.JPG"
    _no_temp_files(tmp_path)


def test_errors_are_user_errors():
    assert issubclass(ImageError, UserError) and issubclass(OutputError, UserError)


def test_list_image_files_skips_hidden_and_sorts_by_relative_path(tmp_path):
    from convscope.images import list_image_files

    for rel in ["b.PNG", "a/z.jpg", "a/b/c.webp", "a.jpeg", "notes.txt", "p/phone.AVIF", ".hidden.jpg", "._b.jpg",
                ".git/x.png", "__MACOSX/a.jpg", "a/.DS_Store"]:
        f = tmp_path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x")
    (tmp_path / "folder.jpg").mkdir()  # a folder named like an image is not one
    os.mkfifo(tmp_path / "pipe.jpg")  # nor a pipe
    (tmp_path / "gone.png").symlink_to(tmp_path / "moved-away.png")  # listed: its reader says it is gone
    rel = [p.relative_to(tmp_path).as_posix() for p in list_image_files(tmp_path)]
    assert rel == ["a.jpeg", "a/b/c.webp", "a/z.jpg", "b.PNG", "gone.png", "p/phone.AVIF"]  # (.avif was left out)
    assert [p.name for p in list_image_files(tmp_path, recursive=False)] == ["a.jpeg", "b.PNG", "gone.png"]
    assert len(list_image_files(tmp_path, limit=1)) == 3  # stops once over the limit (after the top folder)
    assert list_image_files(tmp_path / "a" / "b" / "c.webp") == []  # not a folder: nothing


def test_output_set_keeps_or_puts_back_the_files_it_replaced(tmp_path):
    from convscope.imagefiles import OutputSet

    old, new = tmp_path / "f_0001.png", tmp_path / "f_0002.png"
    old.write_bytes(b"earlier frame")
    old.with_suffix(".json").write_text("earlier sidecar")
    outputs = OutputSet()
    for path in (old, new, old):  # a name claimed twice is set aside once
        outputs.claim(path, sidecar=True).write_bytes(b"this run")
    assert outputs.written == [old, old.with_suffix(".json"), new, new.with_suffix(".json")]
    outputs.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f_0001.json", "f_0001.png"]
    assert old.read_bytes() == b"earlier frame" and old.with_suffix(".json").read_text() == "earlier sidecar"
    outputs = OutputSet()
    outputs.claim(old).write_bytes(b"this run")
    outputs.keep()
    assert old.read_bytes() == b"this run" and outputs.written == [old]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f_0001.json", "f_0001.png"]  # nothing left aside


def test_resize_refuses_a_size_no_memory_holds():
    # resize_long_side(img, 10**6) made a 10^6 x 10^6 image: a MemoryError, or the OOM killer.
    with pytest.raises(ConfigError, match="at most 16384 pixels on the long side"):
        resize_long_side(_noise(), 10**6)
    for bad in (10**12, float("inf")):
        with pytest.raises(ConfigError, match="^pixel count must be at most"):
            resize_to_pixels(_noise(), bad)
    assert max(resize_long_side(_noise(), 4096).size) == 4096


def test_paths_of_the_wrong_kind_are_named(tmp_path):
    # load_image(None) / save_image(img, 5) were raw TypeErrors; a NUL byte in a name a ValueError.
    for bad in (None, 5, b"x.png"):
        with pytest.raises(ImageError, match="^image path must be a file path"):
            load_image(bad)
        with pytest.raises(OutputError, match="^output path must be a file path"):
            save_image(_noise(), bad)
    with pytest.raises(ImageError, match="holds a NUL character"):
        load_image(str(tmp_path / "a\0b.png"))
    with pytest.raises(OutputError, match="holds a NUL character"):
        save_image(_noise(), str(tmp_path / "a\0b.png"))

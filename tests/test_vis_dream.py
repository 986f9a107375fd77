"""DeepDream: engine properties on tiny images, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from interrupt import ctrl_c_bar
from netcache import cached_get_net
import torch
from PIL import Image

from convscope import images
from convscope.cli import main
from convscope.errors import ConfigError, ImageError
from convscope.vis import dream as dream_mod
from convscope.vis.dream import DreamConfig, Dreamer, _cuts, dream


def photo(w=64, h=48, seed=0) -> Image.Image:
    """Smooth blobs plus a little noise: something a layer responds to, but not saturated."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / 8.0
    a = np.stack([np.sin(x + c) * np.cos(y - c) for c in (0.0, 1.0, 2.0)], -1) * 0.35 + 0.5
    a = a + rng.normal(0, 0.03, a.shape)
    return Image.fromarray((a.clip(0, 1) * 255).astype(np.uint8))


def tiny(**kw) -> DreamConfig:
    return DreamConfig(**{"size": 64, "layer": "relu2_1", "octaves": 2, "steps": 4, "jitter": 4,
                          "device": "cpu", "precision": "fp32", **kw})


@pytest.fixture(scope="module", autouse=True)
def shared_backbone():
    """Build VGG19 once for this module; runs never change it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dream_mod, "get_net", cached_get_net(dream_mod.get_net, {}))
        yield


@pytest.fixture(scope="module")
def plain():
    return dream(photo(), tiny())


# --------------------------------------------------------------------------------------- engine

def test_objective_increases_and_size_is_kept(plain):
    assert plain.image.size == (64, 48)
    assert plain.octave_sizes == [(46, 34), (64, 48)]
    assert len(plain.history) == 8
    last = [row["objective"] for row in plain.history if row["octave"] == 2]
    assert last[-1] > last[0]
    assert plain.objective > 1.5 * plain.start_objective, (plain.start_objective, plain.objective)


def test_previews_carry_the_full_size_dream_every_n_steps_and_at_each_octave_end():
    seen = []
    result = Dreamer(tiny(steps=5)).run(photo(), lambda p: seen.append(p), preview_every=2)
    shown = [(p.stage, p.iteration) for p in seen if p.image is not None]
    assert shown == [(1, 2), (1, 4), (1, 5), (2, 2), (2, 4), (2, 5)]
    assert all(p.image.shape == (1, 3, 48, 64) and p.image.device.type == "cpu" for p in seen if p.image is not None)
    last = seen[-1].image
    assert torch.allclose(last, images.pil_to_tensor(result.image), atol=1 / 255 + 1e-6)
    quiet = []
    Dreamer(tiny(steps=2)).run(photo(), quiet.append)  # no previews unless asked for
    assert quiet and all(p.image is None for p in quiet)


def test_channel_objective_grows_that_channel():
    d = Dreamer(tiny(channel=5))
    x = images.pil_to_tensor(photo())
    out = images.pil_to_tensor(d.run(photo()).image)
    with torch.no_grad():
        before, after = (d.net.features(t, ["relu2_1"])["relu2_1"][:, 5].mean().item() for t in (x, out))
    assert after > before + 0.1 * abs(before) + 1e-3, (before, after)


def test_channel_out_of_range_and_unknown_layer():
    with pytest.raises(ConfigError, match="out of range.*128 channels"):
        Dreamer(tiny(channel=128))
    with pytest.raises(ConfigError, match="did you mean 'relu2_1'"):
        Dreamer(tiny(layer="relu2_1x"))


def test_guide_increases_the_feature_dot_product():
    guide = photo(seed=3).transpose(Image.Transpose.ROTATE_90)
    d = Dreamer(tiny(), guide=guide)
    result = d.run(photo())
    assert result.objective > 1.2 * result.start_objective, (result.start_objective, result.objective)
    # ... and that is the guided objective, not the plain one: it differs from the layer's L2.
    plain = Dreamer(tiny()).measure(images.pil_to_tensor(photo()))
    assert abs(plain - result.start_objective) > 1e-3 * abs(plain)


def test_too_small_says_which_size_works_or_to_crop():
    # It said only that the short side needs more pixels "at --size N", not what would do.
    with pytest.raises(ImageError, match=r"\(400x10\) is too small or elongated .*; use --size 80 or more, or use a "
                                         r"shallower --layer$"):
        Dreamer(tiny(size=40)).run(photo().resize((400, 10)))  # relu2_1: stride 2; 40x1 at --size 40
    with pytest.raises(ImageError, match=r"\(5000x1\) .*; crop it, or use a shallower --layer$"):
        Dreamer(tiny(size=5000, layer="relu3_1")).run(Image.new("RGB", (5000, 1)))  # --size 20000 > 8192
    with pytest.raises(ImageError, match=r"\(4000x3\) .*; use --size 2667 or more, or use"):  # 0 px at --size 64
        Dreamer(tiny(size=64)).run(Image.new("RGB", (4000, 3)))


def test_a_guide_needs_a_layer_with_positions(monkeypatch):
    # A classifier's logits (a vector per image): an IndexError traceback ("Dimension out of range").
    from tinynets import CIFAR, make_get_net

    monkeypatch.setattr(dream_mod, "get_net", make_get_net())
    with pytest.raises(ConfigError, match="--guide matches the features at each position, and logits of cifar-test"):
        Dreamer(tiny(net=CIFAR, layer="logits", size=32), guide=photo())


def test_small_octaves_are_dropped():
    d = Dreamer(tiny(layer="relu3_1", octaves=6, octave_scale=2.0))  # stride 4: octaves under 16 px go
    assert d.octave_sizes(64, 48) == [(32, 24), (64, 48)]


def test_cuts_cover_the_side_on_stride_multiples():
    # (48, 32, 32) and (127, 42, 32) left a last tile under the stride (16 and 31 px): dream --layer pool5
    # --tile 32 --size 64 failed with "a 32x16 image is too small for layer pool5", an image never given.
    for n, tile, stride in ((64, 32, 2), (520, 512, 8), (100, 30, 4), (20, 512, 16), (48, 32, 32), (48, 16, 32),
                            (127, 42, 32)):
        spans = _cuts(n, tile, stride)
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(a % stride == 0 and b - a >= min(n, stride) for a, b in spans), (n, tile, stride, spans)
        assert all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
    assert min(b - a for a, b in _cuts(520, 512, 8)) >= 256  # no 8 px sliver


def test_tiled_gradient_matches_untiled_away_from_tile_borders():
    d = Dreamer(tiny())
    x = images.pil_to_tensor(photo(64, 64))
    whole, v_whole = d.gradient(x, tile=4096)
    tiled, v_tiled = d.gradient(x, tile=32)  # 2 x 2 tiles, borders at 32
    margin = 12  # > relu2_1's receptive-field radius (5 px), and pooling is aligned
    far = torch.ones(64, dtype=torch.bool)
    far[32 - margin:32 + margin] = False
    mask = far[:, None] & far[None, :]
    a, b = whole[..., mask], tiled[..., mask]
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-6 * a.abs().max().item())
    assert not torch.allclose(whole, tiled, rtol=1e-4, atol=1e-6 * a.abs().max().item())  # borders do differ
    assert abs(v_whole - v_tiled) < 0.15 * v_whole  # only positions near the seams differ


def test_zoom_frames_count_and_size(plain):
    d = Dreamer(tiny(zoom_steps=2))
    frames = list(d.zoom(plain.image, count=3))
    assert len(frames) == 3 and all(f.size == (64, 48) for f in frames)
    assert frames[0].tobytes() != plain.image.tobytes()


# ------------------------------------------------------------------------------------------ CLI

CLI_TINY = ["--size", "48", "--layer", "relu2_1", "--octaves", "2", "--steps", "2", "--device", "cpu",
            "--precision", "fp32", "-q"]


@pytest.fixture()
def src(tmp_path):
    p = tmp_path / "in.png"
    photo().save(p)
    return p


def test_cli_writes_output_sidecar_and_zoom_frames(tmp_path, src, capsys):
    out = tmp_path / "dream.png"
    loud = [a for a in CLI_TINY if a != "-q"]
    assert main(["dream", str(src), "-o", str(out), *loud, "--zoom-frames", "2", "--zoom-steps", "1"]) == 0
    assert "and 2 zoom frame(s) in" in capsys.readouterr().err  # not "intermediate image(s)"
    assert Image.open(out).size == (48, 36)
    meta = json.loads((tmp_path / "dream.json").read_text())
    assert meta["command"] == "dream" and meta["config"]["layer"] == "relu2_1"
    for n in (1, 2):
        frame = tmp_path / f"dream_{n:04d}.png"
        assert Image.open(frame).size == (48, 36)
        assert not frame.with_suffix(".json").exists()
    assert not (tmp_path / "dream_0003.png").exists()


def test_cli_zoom_frames_over_an_input_or_a_folder_are_refused_before_the_dream(tmp_path, capsys):
    # The frames are written after the dream: z_0001.png as the input image was replaced by a zoom frame
    # (exit 0), and a folder named like a frame failed the run after the dream had replaced the old one.
    source = tmp_path / "z_0001.png"
    photo().save(source)
    before = source.read_bytes()
    zoom = [*CLI_TINY, "--zoom-frames", "2", "--zoom-steps", "1"]
    assert main(["dream", str(source), "-o", str(tmp_path / "z.png"), *zoom]) == 2
    err = capsys.readouterr().err
    assert "one of its --zoom-frames frames" in err and "z_0001.png" in err and err.count("\n") == 1, err
    assert source.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["z_0001.png"]
    (tmp_path / "y_0002.png").mkdir()
    (tmp_path / "y.png").write_bytes(b"the old dream")
    assert main(["dream", str(source), "-o", str(tmp_path / "y.png"), *zoom]) == 2
    err = capsys.readouterr().err
    assert "y_0002.png" in err and "folder" in err and err.count("\n") == 1, err
    assert (tmp_path / "y.png").read_bytes() == b"the old dream" and not (tmp_path / "y.json").exists()


def test_cli_zoom_frames_failing_midway_put_back_the_earlier_frames(tmp_path, capsys, monkeypatch):
    # A rerun whose third frame could not be written deleted the earlier run's first two frames,
    # which it had replaced.
    from convscope.errors import OutputError

    source = tmp_path / "in.png"
    photo().save(source)
    argv = ["dream", str(source), "-o", str(tmp_path / "d.png"), *CLI_TINY, "--zoom-frames", "3", "--zoom-steps", "1"]
    assert main(argv) == 0
    frames = {n: (tmp_path / n).read_bytes() for n in ("d_0001.png", "d_0002.png", "d_0003.png")}
    for name in frames:
        (tmp_path / name).write_bytes(b"an earlier frame " + name.encode())
    real = images.save_image

    def full_disk(image, path, metadata=None):
        if Path(path).name == "d_0003.png":
            raise OutputError(f"cannot write {path}: no space left on device")
        return real(image, path, metadata)

    monkeypatch.setattr(images, "save_image", full_disk)
    assert main(argv) == 2
    assert "no space left" in capsys.readouterr().err
    for name in frames:
        assert (tmp_path / name).read_bytes() == b"an earlier frame " + name.encode()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("extra, needle", [
    (["--channel", "999"], "out of range"),
    (["--layer", "relu2_1x"], "did you mean"),
    (["--steps", "0"], "--steps"),
    (["--steps", "1000000000000"], "from 1 to 1000000"),  # ran for years, its history growing
    (["--zoom-steps", "1000000000000"], "--zoom-steps"),
    (["--lr", "-0.1"], "--lr"),
    (["--octave-scale", "1"], "--octave-scale"),
    (["--octaves", "1", "--octave-scale", "2"], "--octaves 1 has one"),  # ignored, exit 0
    # They shape the zoom frames; without --zoom-frames they were ignored, exit 0.
    (["--zoom", "1.2"], "--zoom and --zoom-steps shape the --zoom-frames sequence: add --zoom-frames N"),
    (["--zoom-steps", "3"], "--zoom and --zoom-steps shape the --zoom-frames sequence"),
])
def test_cli_bad_options_exit_2_one_line_no_output(tmp_path, src, capsys, extra, needle):
    out = tmp_path / "o.png"
    assert main(["dream", str(src), "-o", str(out), *CLI_TINY, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err
    assert list(tmp_path.iterdir()) == [src]


def test_cli_bad_images_exit_2_no_output(tmp_path, src, capsys):
    out = tmp_path / "o.png"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    # --guide '' dreamt without a guide, exit 0.
    for argv in (["dream", str(tmp_path / "missing.png")], ["dream", str(bad)],
                 ["dream", str(src), "--guide", str(bad)], ["dream", str(src), "--guide", ""]):
        assert main([*argv, "-o", str(out), *CLI_TINY]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("convscope: error:") and "\n" not in err
        assert not out.exists() and not out.with_suffix(".json").exists()


def test_ctrl_c_saves_the_dream_so_far_at_full_size(tmp_path, monkeypatch, capsys):
    import convscope.commands.dream as command

    monkeypatch.setattr(command, "progress_bar", ctrl_c_bar(2))
    source = tmp_path / "in.png"
    photo().save(source)
    out = tmp_path / "out" / "d.png"
    out.parent.mkdir()
    code = main(["dream", str(source), "-o", str(out), "--size", "64", "--layer", "relu2_1", "--octaves", "2",
                 "--steps", "4", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err and str(out) in err, err
    assert Image.open(out).size == (64, 48)  # the coarse octave's progress, upsampled to the size asked for
    assert json.loads(out.with_suffix(".json").read_text())["command"] == "dream"


def test_api_image_and_guide_may_be_paths_and_wrong_types_are_one_line_errors(tmp_path):
    photo().save(tmp_path / "p.png")
    cfg = tiny(octaves=1, steps=1)
    want = dream(photo(), cfg).image.tobytes()
    assert dream(tmp_path / "p.png", cfg).image.tobytes() == want  # was AttributeError: no attribute 'size'
    assert dream(photo(), cfg, guide=str(tmp_path / "p.png")).image.size == photo().size
    with pytest.raises(ImageError, match="the image must be a file path"):
        dream(np.asarray(photo()), cfg)
    with pytest.raises(ImageError, match="the guide image must be a file path"):
        dream(photo(), cfg, guide=np.asarray(photo()))


def test_dreamer_names_wrong_arguments():
    # Dreamer({}) and Dreamer(None) were AttributeErrors (no validate); zoom("x.png") an
    # AttributeError, zoom(count="2") a TypeError and zoom(count=-1) no frames without a word;
    # run(callback=5) a TypeError at the first step, run(preview_every=-1) accepted.
    for bad in ({}, None):
        with pytest.raises(ConfigError, match="^config must be a DreamConfig"):
            Dreamer(bad)
    d = Dreamer(tiny(steps=1, octaves=1, zoom_steps=1))
    with pytest.raises(ConfigError, match="^callback must be a function"):
        d.run(photo(), callback=5)
    with pytest.raises(ConfigError, match="^preview_every must be a whole number"):
        d.run(photo(), preview_every=-1)
    for count in (-1, "2", 2.5):
        with pytest.raises(ConfigError, match="^count must be a whole number"):
            list(d.zoom(photo(), count))
    with pytest.raises(ImageError, match="^the start image must be"):
        list(d.zoom(5, 1))
    assert len(list(d.zoom(photo(), 1))) == 1

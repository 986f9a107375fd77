"""Texture synthesis (Gatys et al. 2015): engine properties on tiny images, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from netcache import cached_get_net
import torch
from PIL import Image

from convscope import images
from convscope.cli import main
from convscope.errors import ConfigError, ImageError
from convscope.optimize import Interrupted
from convscope.vis import texture
from convscope.vis.texture import DEFAULT_LAYERS, TextureConfig, TextureObjective, circular_net, synthesize

# Shallow layers keep runs cheap; the properties tested do not need pool4.
SHALLOW = ("relu1_1", "pool1", "relu2_1")


def checks(n=48) -> Image.Image:
    """High-contrast red columns x green rows: a texture whose Gram matrices are far from noise's."""
    y, x = np.mgrid[0:n, 0:n]
    a = np.zeros((n, n, 3), np.uint8)
    a[..., 0] = np.where((x // 6) % 2, 220, 30)
    a[..., 1] = np.where((y // 8) % 2, 200, 40)
    a[..., 2] = 90
    return Image.fromarray(a)


def tiny(**kw) -> TextureConfig:
    return TextureConfig(**{"size": (40, 56), "source_size": 48, "iterations": 30, "layers": SHALLOW,
                            "device": "cpu", "precision": "fp32", **kw})


@pytest.fixture(scope="module", autouse=True)
def shared_backbone():
    """Build VGG19 once for this module (seconds each time otherwise); runs never change it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(texture, "get_net", cached_get_net(texture.get_net, {}))
        yield


@pytest.fixture(scope="module")
def plain():
    return synthesize(checks(), tiny())


@pytest.fixture(scope="module")
def tiled():
    return synthesize(checks(), tiny(tileable=True))


def edge_vs_interior(img: Image.Image) -> tuple[float, float]:
    """Mean |difference| between the last and first column, and between neighbouring columns."""
    a = np.asarray(img).astype(float)
    return np.abs(a[:, -1] - a[:, 0]).mean(), np.abs(np.diff(a, axis=1)).mean()


# --------------------------------------------------------------------------------------- engine

def test_gram_loss_falls_below_5_percent_at_the_size_asked_for(plain):
    g = plain.gram_history
    assert len(g) == 30 and len(plain.history) == 30
    assert plain.final_loss < 0.05 * g[0]
    assert plain.final_loss <= min(g) + 1e-6  # the best evaluated image is returned
    assert plain.image.size == (40, 56)       # W x H, independent of the 48x48 source
    assert plain.source.size == (48, 48)
    assert [label.split(":")[0] for label, _ in plain.snapshots] == ["first", "middle", "last"]


def test_odd_non_square_size_is_exact():
    result = synthesize(checks(), tiny(size=(37, 21), iterations=2, layers=("relu1_1",)))
    assert result.image.size == (37, 21)


def test_seed_repeatable():
    def run(seed):
        return synthesize(checks(), tiny(size=(32, 32), iterations=3, layers=("relu1_1",), seed=seed)).image

    a, b, c = run(5), run(5), run(6)
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()


def test_tileable_objective_is_shift_invariant():
    """On a torus a circular shift changes nothing (sides and shift divisible by the deepest stride,
    2 for relu2_1: an odd shift would move the pooling grid by half a cell)."""
    net = texture.get_net("vgg19", "avg")
    src = images.pil_to_tensor(checks())
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    shifted = torch.roll(x, shifts=(6, 14), dims=(2, 3))
    for tileable, invariant in ((True, True), (False, False)):
        cfg = tiny(tileable=tileable, tv_weight=1.0)
        obj = TextureObjective(net, src, cfg, circular_net(net) if tileable else None)
        a, b = obj(x), obj(shifted)
        for term in ("gram", "tv"):
            same = torch.allclose(a[term], b[term], rtol=1e-4, atol=0)
            assert same == invariant, (tileable, term, a[term].item(), b[term].item())
    assert all(m.padding_mode == "zeros" for m in net.modules() if isinstance(m, torch.nn.Conv2d))


def test_tileable_edges_continue_like_interior_columns(plain, tiled):
    assert tiled.final_loss < 0.05 * tiled.gram_history[0]
    edge, interior = edge_vs_interior(tiled.image)
    assert edge < 1.25 * interior, (edge, interior)
    # Without --tileable the two edges are unrelated: the check above can fail.
    edge, interior = edge_vs_interior(plain.image)
    assert edge > 1.4 * interior, (edge, interior)


def test_match_histogram_gives_the_source_colours_exactly():
    result = synthesize(checks(), tiny(size=(48, 48), iterations=2, layers=("relu1_1",), match_histogram=True))
    out, src = np.asarray(result.image), np.asarray(result.source)
    for ch in range(3):
        assert np.array_equal(np.sort(out[..., ch].ravel()), np.sort(src[..., ch].ravel()))


def test_unknown_layer_suggests_a_name():
    with pytest.raises(ConfigError, match="did you mean 'pool2'"):
        synthesize(checks(), tiny(layers=("relu1_1", "pool_2")))


@pytest.mark.parametrize("bad", [dict(size=(0, 0)), dict(size=(64,)), dict(size=(10**5, 64)), dict(source_size=0),
                                 dict(iterations=0), dict(layer_weights=(1, -1, 1)), dict(layer_weights=(1, 1)),
                                 dict(layer_weights=(0, 0, 0)), dict(tv_weight=-1.0), dict(range_weight=float("nan")),
                                 dict(pooling="median"), dict(layers=()), dict(warmup=-1),
                                 # Ran: a float count of warm-up iterations, "no" as a tileable texture.
                                 dict(warmup=2.5), dict(save_every=1.5), dict(tileable="no"),
                                 dict(match_histogram=1), dict(cuda_graph=None),
                                 # L-BFGS's options with another optimizer: ignored, exit 0.
                                 dict(optimizer="adam", warmup=5), dict(optimizer="sgd", lbfgs_history=5)])
def test_config_validation(bad):
    with pytest.raises(ConfigError):
        tiny(**bad).validate()


def test_layer_weights_normalized():
    assert tiny(layer_weights=(1, 1, 2)).weights() == (0.25, 0.25, 0.5)
    assert TextureConfig(layers=DEFAULT_LAYERS).weights() == (0.2,) * 5


def test_size_below_the_deepest_stride_is_a_config_error():
    with pytest.raises(ConfigError, match="at least 16 px"):
        synthesize(checks(), TextureConfig(size=(64, 12), iterations=1, device="cpu"))


# ------------------------------------------------------------------------------------------ CLI

def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "in" / "checks.png"
    path.parent.mkdir()
    checks().save(path)
    (tmp_path / "out").mkdir()
    return path


FAST = ["--iterations", "4", "--warmup", "2", "--layers", "relu1_1", "--device", "cpu", "-q"]


def test_cli_writes_image_sidecar_and_strip(capsys, src, tmp_path):
    out = tmp_path / "out" / "tex.png"
    code, err = cli(capsys, "texture", src, "-o", out, "--size", 40, 24, "--source-size", 32, "--strip",
                    "--save-every", 2, *FAST)
    assert code == 0, err
    assert Image.open(out).size == (40, 24)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["command"] == "texture" and meta["config"]["size"] == [40, 24]
    assert meta["config"]["layers"] == ["relu1_1"] and meta["iterations_run"] == 4
    assert meta["source_size"] == [32, 32] and "gram" in meta["final_losses"]
    assert images.read_png_metadata(out)["config"]["source_size"] == 32
    names = sorted(p.name for p in out.parent.iterdir())
    assert names == ["tex.json", "tex.png", "tex_0002.png", "tex_0004.png", "tex_progress.png"]


def test_cli_interrupt_saves_best_image(capsys, src, tmp_path, monkeypatch):
    def stop(*args, **kwargs):
        raise Interrupted(torch.full((1, 3, 24, 40), 0.5), 3)

    monkeypatch.setattr(texture, "optimize_image", stop)
    out = tmp_path / "out" / "tex.png"
    code, err = cli(capsys, "texture", src, "-o", out, "--size", 40, 24, *FAST)
    assert code == 130 and str(out) in err
    assert Image.open(out).size == (40, 24)


@pytest.mark.parametrize("case", ["missing", "corrupt", "size0", "negative-weight", "negative-tv", "bad-layer"])
def test_cli_bad_input_one_line_exit_2_no_output(capsys, src, tmp_path, case):
    out = tmp_path / "out" / "tex.png"
    argv = {"missing": [tmp_path / "in" / "nope.png"],
            "corrupt": [src.with_name("bad.png")],
            "size0": [src, "--size", 0, 0],
            "negative-weight": [src, "--layers", "relu1_1", "pool1", "--layer-weights", 1, -2],
            "negative-tv": [src, "--tv-weight", -1],
            "bad-layer": [src, "--layers", "relu1_1", "relu9_1"]}[case]
    src.with_name("bad.png").write_bytes(src.read_bytes()[:60])  # a truncated PNG
    code, err = cli(capsys, "texture", *argv, "-o", out, "--iterations", 2, "--device", "cpu", "-q")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("convscope: error: "), err
    assert "Traceback" not in err
    assert list(out.parent.iterdir()) == []


def test_api_source_may_be_a_path_and_wrong_types_are_one_line_errors(tmp_path):
    checks().save(tmp_path / "checks.png")
    cfg = tiny(iterations=2)
    by_path = synthesize(tmp_path / "checks.png", cfg)  # was TypeError deep in the engine
    assert by_path.image.tobytes() == synthesize(checks(), cfg).image.tobytes()
    with pytest.raises(ImageError, match="the source texture must be a file path"):
        synthesize(np.asarray(checks()), cfg)
    for bad, words in (({"size": 48}, "--size takes two numbers"), ({"layers": "relu1_1"}, "list of layer names")):
        with pytest.raises(ConfigError, match=words):
            synthesize(checks(), tiny(**bad))


def test_a_layer_without_a_spatial_grid_is_a_config_error(monkeypatch):
    # A classifier's logits (a vector per image) have no Gram matrix: a ValueError traceback from
    # losses.gram ("not enough values to unpack"), exit 1.
    from tinynets import CIFAR, make_get_net

    monkeypatch.setattr(texture, "get_net", make_get_net())
    with pytest.raises(ConfigError, match="layer logits of cifar-test has no spatial grid"):
        synthesize(checks(), tiny(net=CIFAR, size=(32, 32), source_size=32, layers=("features.1", "logits")))

"""Every engine end to end on a GPU, through the CLI as a user runs it: the code paths that only a
CUDA device takes (the L-BFGS iteration replayed as a CUDA graph, bf16 autocast on the GPU, the
classifier's data loader augmenting on the device, the instance norm's reduced form).

Skipped without a CUDA GPU. `CONVSCOPE_TEST_DEVICE=cpu python -m pytest tests/test_gpu.py` runs the
same bodies on the CPU, to check the tests themselves on a machine without one (bench/gpu_session.sh
runs them on a lent GPU).
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from convscope.cli import main
from convscope.images import sidecar_path

DEVICE = os.environ.get("CONVSCOPE_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else None)
ON_GPU = DEVICE is not None and DEVICE.startswith("cuda")
pytestmark = pytest.mark.skipif(DEVICE is None, reason="needs a CUDA GPU (CONVSCOPE_TEST_DEVICE=cpu runs these "
                                                      "tests on the CPU)")
CLASSES = ("red", "green", "blue")


def photo(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([x / w, y / h, 0.5 + 0.5 * np.sin(x / 5.0) * np.cos(y / 7.0)], -1) * 200
    return Image.fromarray((a + rng.integers(0, 40, (h, w, 3))).clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def pics(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    photo(61, 47, 0).save(root / "content.png")
    photo(40, 40, 1).rotate(45).save(root / "style.png")
    return root


def sidecar(out) -> dict:
    return json.loads(sidecar_path(out).read_text())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gatys_replays_lbfgs_as_a_cuda_graph_and_matches_eager(pics, tmp_path, precision):
    runs = {}
    for graph in ("--cuda-graph", "--no-cuda-graph"):
        out = tmp_path / f"{graph}.png"
        assert main(["stylize", str(pics / "content.png"), str(pics / "style.png"), "-o", str(out), "--size", "48",
                     "--iterations", "12", "--device", DEVICE, "--precision", precision, graph, "-q"]) == 0
        assert Image.open(out).size == (48, 37)
        runs[graph] = sidecar(out)
    assert runs["--cuda-graph"]["cuda_graph"] is ON_GPU and runs["--no-cuda-graph"]["cuda_graph"] is False
    graphed, eager = (runs[g]["final_losses"]["loss"] for g in ("--cuda-graph", "--no-cuda-graph"))
    assert np.isfinite(graphed) and np.isfinite(eager)
    # The same arithmetic, replayed: fp32 agrees closely; bf16 rounds the features, so within a few percent.
    assert graphed == pytest.approx(eager, rel=1e-3 if precision == "fp32" else 5e-2)


def test_texture_replays_lbfgs_as_a_cuda_graph(pics, tmp_path):
    out = tmp_path / "t.png"
    assert main(["texture", str(pics / "style.png"), "-o", str(out), "--size", "40", "32", "--iterations", "10",
                 "--device", DEVICE, "--precision", "bf16", "-q"]) == 0
    assert Image.open(out).size == (40, 32)
    meta = sidecar(out)
    assert meta["cuda_graph"] is ON_GPU and np.isfinite(meta["final_losses"]["loss"])


@pytest.mark.parametrize("precision", ["auto", "bf16", "fp32"])
def test_feed_forward_and_arbitrary_keep_odd_sizes(pics, tmp_path, precision):
    out = tmp_path / "ff.png"
    assert main(["stylize", str(pics / "content.png"), "--model", "starry_night", "-o", str(out),
                 "--device", DEVICE, "--precision", precision, "-q"]) == 0
    ff = np.asarray(Image.open(out), dtype=np.float32)
    assert ff.shape == (47, 61, 3) and ff.std() > 5  # stylized, not blank
    out = tmp_path / "arb.png"
    assert main(["stylize", str(pics / "content.png"), str(pics / "style.png"), "--method", "arbitrary",
                 "-o", str(out), "--device", DEVICE, "--precision", precision, "--alpha", "0", "-q"]) == 0
    same = np.asarray(Image.open(out), dtype=np.float32)
    original = np.asarray(Image.open(pics / "content.png"), dtype=np.float32)
    assert same.shape == original.shape and np.abs(same - original).mean() < 25  # alpha 0: about the content


def make_folder(root, size: int, n_train: int = 16, n_test: int = 6):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for ci, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
                r, c = rng.integers(0, size - size // 3, 2)
                a[r:r + size // 3, c:c + size // 3, ci] = 230
                Image.fromarray(a).save(folder / f"{i}.png")
    return root


def train(tmp_path, data, model: str, *extra: str) -> list[dict]:
    run = tmp_path / model.replace(":", "_")
    assert main(["classify", "train", "--data", str(data), "--model", model, "-o", str(run), "--device", DEVICE,
                 "--cache-dir", str(tmp_path / "cache"), "--batch-size", "8", "-q", *extra]) == 0
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(np.isfinite(float(r["train_loss"])) for r in rows)
    return rows


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_transfer_feature_pass_and_head_on_the_device(tmp_path, precision):
    data = make_folder(tmp_path / "data", 16)
    rows = train(tmp_path, data, "transfer:vgg19", "--input-size", "32", "--epochs", "6", "--precision", precision)
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert main(["classify", "evaluate", str(tmp_path / "transfer_vgg19"), "--device", DEVICE, "--json"]) == 0


def test_from_scratch_with_the_loader_augmenting_on_the_device(tmp_path, capsys):
    data = make_folder(tmp_path / "data", 32)
    rows = train(tmp_path, data, "resnet-fast", "--epochs", "4", "--cutout", "8", "--ema", "0.9")
    assert len(rows) == 4
    capsys.readouterr()
    assert main(["classify", "evaluate", str(tmp_path / "resnet-fast"), "--device", DEVICE, "--json",
                 "--tta", "shift"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 18


@pytest.mark.parametrize("command", [
    ["dream", "{content}", "--size", "48", "--layer", "relu2_1", "--octaves", "2", "--steps", "2"],
    ["invert", "{content}", "--size", "32", "--layer", "relu2_1", "--iterations", "5"],
    ["explain", "{content}", "--net", "vgg19"],
])
def test_see_inside_on_the_device(pics, tmp_path, command):
    out = tmp_path / "o.png"
    argv = [a.format(content=pics / "content.png") for a in command]
    assert main([*argv, "-o", str(out), "--device", DEVICE, "-q"]) == 0
    assert out.exists() and sidecar_path(out).exists()

"""`convscope export-onnx`: the ONNX file of a feed-forward style model runs in onnxruntime at any
frame size the PyTorch network takes (small and odd ones included), and a model that cannot be
verified is never written. Models are tiny and untrained, made here."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from convscope.cli import main
from convscope.fast import export as style_export
from convscope.fast.models import STYLE_KIND, save_model
from convscope.fast.nets import TransformerNet

onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    net = TransformerNet((4, 8, 8), 1).eval()
    path = save_model(tmp_path_factory.mktemp("model") / "tiny.safetensors", STYLE_KIND, net, {"card": {}})
    return path, net


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("convscope: error:") and err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize("opset", [11, 17])
def test_onnx_runs_at_small_and_odd_sizes_as_pytorch_does(opset, tiny, tmp_path, capsys):
    # The network replicates instead of reflecting when a side is under 20 px; the file used to
    # keep only the reflect branch of the example it was traced on, and onnxruntime refused
    # 1x1, 9x14 or 17-wide frames ("Pad reflect: pre-pad (16) exceeds maximum allowed").
    ort = pytest.importorskip("onnxruntime")
    model, net = tiny
    out = tmp_path / "tiny.onnx"
    assert main(["export-onnx", "--model", str(model), "-o", str(out), "--opset", str(opset), "-q"]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 1, 1), (1, 3, 9, 14), (2, 3, 33, 17), (1, 3, 19, 20), (1, 3, 20, 20), (1, 3, 45, 61)]:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
        with torch.inference_mode():
            want = net(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        assert got.shape == want.shape
        assert np.abs(got - want).max() < 1e-4, shape


def test_opset_beyond_the_exporter_is_refused_up_front(tiny, tmp_path, capsys):
    out = tmp_path / "x.onnx"
    assert main(["export-onnx", "--model", str(tiny[0]), "-o", str(out), "--opset",
                 str(style_export.MAX_OPSET + 1)]) == 2
    err = one_line_error(capsys)
    assert f"between 11 and {style_export.MAX_OPSET}" in err and "Unsupported" not in err
    assert not out.exists()


class _FakeRuntime:
    """An onnxruntime stand-in: a session that cannot load, or one that answers NaN."""

    def __init__(self, broken: bool):
        self.broken = broken

    def InferenceSession(self, data, providers=None):  # noqa: N802 (onnxruntime's name)
        if self.broken:
            raise RuntimeError("[ONNXRuntimeError] : 10 : INVALID_GRAPH : Type Error\nmore detail")
        return self

    def run(self, names, feed):
        return [np.full_like(feed["image"], np.nan)]


@pytest.mark.parametrize("broken", [True, False], ids=["cannot-load", "answers-nan"])
def test_a_model_onnxruntime_cannot_load_or_gets_wrong_is_not_written(broken, tiny, tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.setattr(style_export, "onnxruntime_or_none", lambda: _FakeRuntime(broken))
    out = tmp_path / "x.onnx"
    assert main(["export-onnx", "--model", str(tiny[0]), "-o", str(out)]) == 2
    err = one_line_error(capsys)
    assert "not written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("change, message", [
    ({"out": None}, "the output must be the path of an .onnx file, not NoneType"),  # TypeError from Path before
    ({"opset": "17"}, "--opset must be a whole number, not '17'"),                 # TypeError before
    ({"opset": 17.0}, "--opset must be a whole number, not 17.0"),                 # the exporter's pybind error
])
def test_export_onnx_api_checks_its_arguments(change, message, tiny, tmp_path):
    from convscope.errors import UserError

    args = {"model": str(tiny[0]), "out": tmp_path / "x.onnx", **change}
    with pytest.raises(UserError, match=re.escape(message)):
        style_export.export_onnx(**args)
    assert list(tmp_path.iterdir()) == []

"""`convscope classify export`: ONNX models that onnxruntime runs like PyTorch, with the class names
inside; bad input is one line, exit 2 and no file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from convscope.classify import export as ex
from convscope.classify.config import TrainConfig
from convscope.classify.models import build_model
from convscope.classify.predict import LoadedRun, load_run
from convscope.cli import main
from convscope.nets.hooked import hook_count

from test_classify_cli import CLASSES, make_folder

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    data = make_folder(root / "data", n_train=6, n_test=3, corrupt=False)
    out = root / "run"
    assert main(["classify", "train", "--data", str(data), "-o", str(out), "--epochs", "1", "--batch-size", "8",
                 "--device", "cpu", "--cache-dir", str(root / "cache"), "-q"]) == 0
    return out


def fake_run(name: str, size: int, classes=("cat", "dog", "ship")) -> LoadedRun:
    """A LoadedRun around a freshly built model: no training needed to test the export."""
    torch.manual_seed(0)
    model = build_model(name, len(classes), size, pretrained=False).eval().requires_grad_(False)
    return LoadedRun(model, TrainConfig(model=name, input_size=size), list(classes), size, Path("fake"))


def test_cli_export_with_a_fixed_batch_says_what_it_verified(run, tmp_path, capsys):
    # It said "on batches 1, 1" (two batches of one image: the only size the file takes).
    out = tmp_path / "fixed.onnx"
    assert main(["classify", "export", str(run), "-o", str(out), "--no-dynamic-batch"]) == 0
    assert "on 2 batches of 1: max |difference|" in capsys.readouterr().err
    assert [d.dim_value for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim] == [1, 3, 32, 32]


def run_onnx(path, x: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": x.numpy()})


def test_cli_export_matches_pytorch_and_carries_the_class_names(run, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert main(["classify", "export", str(run), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "verified with onnxruntime" in err and "on batches of 1 and 3: max |difference|" in err, err
    assert out.exists() and not [p for p in tmp_path.iterdir() if p.name != "model.onnx"]  # no temp left

    meta = ex.read_metadata(out)
    assert json.loads(meta["classes"]) == sorted(CLASSES) and meta["input_size"] == "32"
    assert meta["model"] == "simple" and meta["outputs"] == "logits, probabilities"
    record = json.loads(meta["convscope"])
    assert record["exporter"] == "torchscript" and record["run_config"]["model"] == "simple"

    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == ["image"]
    assert [o.name for o in graph.output] == ["logits", "probabilities"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 32, 32]

    loaded = load_run(run, "cpu")
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(7))  # a batch size never verified
    with torch.no_grad():
        want = loaded.model(x)
    logits, probs = run_onnx(out, x)
    assert np.abs(logits - want.numpy()).max() <= 1e-4 * max(1.0, want.abs().max().item())
    assert np.allclose(probs.sum(1), 1, atol=1e-5) and (probs.argmax(1) == want.argmax(1).numpy()).all()


@pytest.mark.parametrize("name, size", [("transfer:vgg19", 32), ("transfer:efficientnet_lite0", 32),
                                        ("resnet18", 32), ("vgg19-bn", 32)])
def test_every_kind_of_model_exports_and_verifies(name, size, tmp_path):
    loaded = fake_run(name, size)
    result = ex.export(loaded, tmp_path / "m.onnx")
    v = result.verification
    assert v is not None and v.batches == (1, 3) and v.max_abs_diff <= v.tolerance
    assert result.exporter == "torchscript" and result.input_shape == ("batch", 3, size, size)
    assert hook_count(loaded.model) == 0  # hooked backbones leave no hook behind
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = loaded.model(x)
    logits, _ = run_onnx(result.path, x)
    assert want.abs().max() > 0 and np.abs(logits - want.numpy()).max() <= v.tolerance
    assert json.loads(ex.read_metadata(result.path)["classes"]) == ["cat", "dog", "ship"]


def test_fixed_batch_logits_only(tmp_path):
    loaded = fake_run("simple", 32)
    result = ex.export(loaded, tmp_path / "m.onnx", dynamic_batch=False, probabilities=False, opset=17)
    model = onnx.load(str(result.path))
    graph = model.graph
    assert [o.name for o in graph.output] == ["logits"]
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {17}
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [1, 3, 32, 32]
    assert result.verification.batches == (1, 1)


def test_export_twice_replaces_the_file_and_keeps_hooks_at_zero(tmp_path):
    loaded = fake_run("simple", 32)
    sizes = [ex.export(loaded, tmp_path / "m.onnx", verify_with_runtime=False).size_bytes for _ in range(3)]
    assert len(set(sizes)) == 1 and (tmp_path / "m.onnx").stat().st_size == sizes[0]
    assert hook_count(loaded.model) == 0 and len(list(tmp_path.iterdir())) == 1


def test_dynamo_exporter_when_onnxscript_is_installed(tmp_path):
    pytest.importorskip("onnxscript")
    result = ex.export(fake_run("simple", 32), tmp_path / "m.onnx", exporter="dynamo")
    assert result.exporter == "dynamo" and result.verification.max_abs_diff <= result.verification.tolerance
    assert json.loads(ex.read_metadata(result.path)["classes"]) == ["cat", "dog", "ship"]


def test_without_onnxruntime_the_model_is_written_unverified(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ex, "onnxruntime_or_none", lambda: None)
    out = tmp_path / "m.onnx"
    assert main(["classify", "export", str(run), "-o", str(out)]) == 0
    assert "not verified (pip install onnxruntime)" in capsys.readouterr().err and out.exists()


def test_a_failed_verification_writes_nothing_and_keeps_the_old_file(tmp_path, monkeypatch):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous model")
    monkeypatch.setattr(ex, "RELATIVE_TOLERANCE", -1.0)  # every difference, even 0, is too large
    with pytest.raises(ex.ExportError, match="differ from PyTorch"):
        ex.export(fake_run("simple", 32), out)
    assert out.read_bytes() == b"previous model" and len(list(tmp_path.iterdir())) == 1


class _FFT(nn.Module):
    """A model the TorchScript exporter has no ONNX translation for (aten::fft_fft2)."""

    def forward(self, x):
        return torch.fft.fft2(x).abs().mean(dim=(2, 3))


class _Broken(nn.Module):
    def forward(self, x):
        raise RuntimeError("this model cannot run\nsecond line of the message")


@pytest.mark.parametrize("model, exporter, message", [(_FFT(), "torchscript", "fft"),
                                                       (_Broken(), "auto", "this model cannot run")])
def test_a_model_that_cannot_export_is_one_line(tmp_path, capfd, model, exporter, message):
    loaded = LoadedRun(model, TrainConfig(), ["a", "b", "c"], 16, Path("fake"))
    with pytest.raises(ex.ExportError) as info:
        ex.export(loaded, tmp_path / "m.onnx", exporter=exporter)
    text = str(info.value)
    assert "cannot export" in text and message in text.lower() and "\n" not in text
    assert not list(tmp_path.iterdir())
    assert capfd.readouterr().out == ""  # the TorchScript exporter's C++ graph dump is silenced


def test_auto_falls_back_to_the_dynamo_exporter(tmp_path):
    pytest.importorskip("onnxscript")
    loaded = LoadedRun(_FFT(), TrainConfig(), ["a", "b", "c"], 16, Path("fake"))
    result = ex.export(loaded, tmp_path / "m.onnx")  # TorchScript has no fft2; torch.export's exporter has
    assert result.exporter == "dynamo" and result.verification.max_abs_diff <= result.verification.tolerance


@pytest.mark.parametrize("argv, message", [
    (["{tmp}", "-o", "{tmp}/m.onnx"], "not a run folder"),
    (["{tmp}/missing", "-o", "{tmp}/m.onnx"], "not a run folder"),
    (["{run}", "-o", "{tmp}/no/such/folder/m.onnx"], "does not exist"),
    (["{run}", "-o", "{tmp}/m.png"], ".onnx"),
    (["{run}", "-o", "{tmp}"], ".onnx"),
    (["{run}", "-o", "{tmp}/m.onnx", "--opset", "5"], "--opset"),
    (["{run}", "-o", "{tmp}/m.onnx", "onnx-missing"], "pip install onnx"),
])
def test_bad_input_is_one_line_exit_2_and_no_file(run, tmp_path, capsys, monkeypatch, argv, message):
    if argv[-1] == "onnx-missing":
        argv = argv[:-1]
        monkeypatch.setitem(__import__("sys").modules, "onnx", None)  # `import onnx` raises ImportError
    argv = ["classify", "export", *(a.format(tmp=tmp_path, run=run) for a in argv)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not list(tmp_path.rglob("*.onnx")) and not list(tmp_path.rglob("*.png"))


def test_metadata_says_how_a_photo_becomes_the_input(tmp_path):
    # classify predict resizes the short side and centre-crops (data.square_crop); a deployment
    # told only "S x S" would stretch a 4:3 photo and get other predictions.
    out = ex.export(fake_run("simple", 32), tmp_path / "m.onnx", verify_with_runtime=False).path
    text = ex.read_metadata(out)["input"]
    assert "short side" in text and "centre crop" in text


@pytest.mark.parametrize("change, message", [
    ({"path": None}, "the output must be the path of an .onnx file, not NoneType"),  # TypeError before
    ({"opset": "18"}, "--opset must be a whole number, not '18'"),                 # TypeError before
    ({"opset": 18.0}, "--opset must be a whole number, not 18.0"),                 # the exporter's pybind error
    ({"dynamic_batch": "no"}, "dynamic_batch must be True or False, not 'no'"),    # exported, batch dynamic
    ({"loaded": "runs/simple"}, "loaded must be the LoadedRun that load_run returns, not str"),  # AttributeError
    ({"extra_metadata": [1]}, "extra_metadata must be a dict (or None), not list"),  # TypeError after the export
])
def test_export_api_checks_its_arguments(change, message, tmp_path):
    from convscope.errors import UserError

    args = {"loaded": fake_run("simple", 32), "path": tmp_path / "m.onnx", **change}
    with pytest.raises(UserError, match=re.escape(message)):
        ex.export(**args)
    assert list(tmp_path.iterdir()) == []

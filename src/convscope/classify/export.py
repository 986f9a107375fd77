"""A trained run as an ONNX model: what a deployment (onnxruntime, TensorRT, OpenVINO, a browser) loads.

The exported graph is the whole model, normalization included (and, for transfer models, the frozen
backbone), so a deployment feeds exactly what the PyTorch model takes:

    input   "image"          float32 [batch, 3, S, S], RGB in [0, 1], S = the run's input size
    output  "logits"         float32 [batch, classes]
    output  "probabilities"  float32 [batch, classes], softmax of the logits (unless probabilities=False)

The class names, the input size and the input convention travel in the model's `metadata_props`
(`classes` as a JSON list, `input_size`, `input`, `outputs`, `model`, and `convscope`: a JSON record
of the export and of the training run), so a deployment needs no other file.

Exporter: the TorchScript-based `torch.onnx.export(dynamo=False)` first. It needs only the `onnx`
package, exists in every torch from 2.4 to at least 2.14 (deprecated since 2.9, where the default
became the torch.export-based exporter) and exports every model of `classify.models`, including the
hook-based backbones (a trace records the operations that ran, hooks and early stops included).
The torch.export-based exporter (`dynamo=True`, which also needs `onnxscript`) is the fallback for a
torch without the old one; it cannot export the hooked EfficientNet-Lite0 backbone (torch 2.14).

Verification (when onnxruntime imports): onnxruntime runs the serialized model on random inputs
(batch 1 and 3) and its outputs are compared with PyTorch's, before anything is written; a model
that disagrees is never written. The file is written atomically (temporary name, fsync, rename).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import inspect
import io
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import OutputError, UserError
# images' atomic writer: temp file + fsync + rename, the user's umask for the mode, OutputError on OSError.
from ..images import check_output_file, write_atomic
from .config import ExportConfig

INPUT_NAME, LOGITS, PROBABILITIES = "image", "logits", "probabilities"
# How a photo becomes the input, as classify train/evaluate/predict make it (data.square_crop): a
# deployment that only knew "S x S" would stretch non-square photos and predict differently.
INPUT_CONVENTION = ("float32 RGB in [0, 1], NCHW [batch, 3, S, S]; the model normalizes itself; photos: "
                    "short side resized to S (Lanczos when shrinking, bicubic when enlarging), centre crop S x S")
# onnxruntime vs PyTorch in float32: measured at most 2e-6 absolute and 5e-7 of the logits' scale on
# this package's models (simple, vgg19-bn, transfer:*, resnet18); 1e-4 of the logits' scale leaves
# room for other CPUs' kernels while catching any real mismatch.
RELATIVE_TOLERANCE = 1e-4
ONNX_HINT = "pip install onnx onnxruntime (or pip install 'convscope[onnx]')"


class ExportError(UserError):
    """The model cannot be exported, or onnxruntime disagrees with PyTorch about the exported model."""


@dataclass
class Verification:
    runtime: str                 # "onnxruntime 1.x.y"
    batches: tuple[int, ...]     # batch sizes run
    max_abs_diff: float          # largest |onnxruntime - PyTorch| over logits (and probabilities)
    logit_scale: float           # largest |logit| seen: what the difference is measured against
    tolerance: float             # the bound max_abs_diff had to stay under


@dataclass
class ExportResult:
    path: Path
    exporter: str                # "torchscript" or "dynamo"
    opset: int
    size_bytes: int
    input_shape: tuple           # ("batch" or 1, 3, S, S)
    outputs: tuple[str, ...]
    classes: list[str]
    verification: Verification | None   # None: not verified (see `unverified_reason`)
    unverified_reason: str | None
    seconds: float


class _Deployable(nn.Module):
    """The run's model with the outputs a deployment wants: logits (and their softmax)."""

    def __init__(self, model: nn.Module, probabilities: bool):
        super().__init__()
        self.model = model
        self.probabilities = probabilities

    def forward(self, image: torch.Tensor):
        logits = self.model(image)
        if self.probabilities:
            return logits, torch.softmax(logits, dim=1)
        return logits


# ---- checks (cheap; run them before loading anything) --------------------------------------------
def require_onnx():
    """The `onnx` module, or ExportError saying what to install."""
    try:
        import onnx
    except ImportError:
        raise ExportError(f"ONNX export needs the onnx package: {ONNX_HINT}") from None
    return onnx


def onnxruntime_or_none():
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


def check_output(path: str | Path) -> Path:
    """OutputError unless an .onnx file can be written at `path` (its folder exists and is writable)."""
    if not isinstance(path, (str, os.PathLike)):  # (a TypeError from Path before)
        raise OutputError(f"the output must be the path of an .onnx file, not {type(path).__name__}")
    p = Path(path).expanduser()
    if p.suffix.lower() != ".onnx":
        raise OutputError(f"cannot write {p}: give a file name ending in .onnx, such as {p.with_suffix('.onnx').name}")
    return check_output_file(p, "model.onnx")


# ---- export ----------------------------------------------------------------------------------------
def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    line = text[0].strip() if text else ""
    line = line if len(line) <= 200 else line[:197] + "..."
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


def _has_dynamo_flag() -> bool:
    """torch >= 2.5 chooses the exporter with `dynamo=`; torch 2.4 has only the TorchScript one."""
    try:
        return "dynamo" in inspect.signature(torch.onnx.export).parameters
    except (TypeError, ValueError):
        return True


@contextlib.contextmanager
def _fd1_to_devnull():
    """Silence file descriptor 1 for a while. The TorchScript exporter's C++ logger writes the whole
    graph straight to it when an export fails (torch 2.7..2.14 switch that log on whatever `verbose`
    says), which Python's redirect_stdout cannot catch; our caller reports the failure in one line."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):  # no fd 1 (embedded interpreters): leave it be
        yield
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _torchscript_bytes(model: nn.Module, example: torch.Tensor, outputs: list[str], opset: int,
                       dynamic_batch: bool) -> bytes:
    buf = io.BytesIO()
    axes = {name: {0: "batch"} for name in [INPUT_NAME, *outputs]} if dynamic_batch else None
    extra = {"dynamo": False} if _has_dynamo_flag() else {}
    with _fd1_to_devnull():
        torch.onnx.export(model, (example,), buf, input_names=[INPUT_NAME], output_names=outputs,
                          opset_version=opset, dynamic_axes=axes, do_constant_folding=True, **extra)
    return buf.getvalue()


def _dynamo_missing() -> str | None:
    """Why the torch.export-based exporter cannot run here, or None when it can."""
    if not _has_dynamo_flag():
        return f"torch {torch.__version__} has no torch.export-based ONNX exporter"
    if importlib.util.find_spec("onnxscript") is None:  # what that exporter builds its graphs with
        return "the torch.export-based exporter needs onnxscript (pip install onnxscript)"
    return None


def _dynamo_bytes(model: nn.Module, example: torch.Tensor, outputs: list[str], opset: int,
                  dynamic_batch: bool) -> bytes:
    missing = _dynamo_missing()
    if missing:
        raise RuntimeError(missing)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    with tempfile.TemporaryDirectory(prefix="convscope-onnx-") as tmp:
        target = Path(tmp) / "model.onnx"
        torch.onnx.export(model, (example,), str(target), input_names=[INPUT_NAME], output_names=outputs,
                          opset_version=opset, dynamic_shapes=shapes, external_data=False, dynamo=True)
        return target.read_bytes()


def to_onnx_bytes(model: nn.Module, input_size: int, config: ExportConfig) -> tuple[bytes, str]:
    """The serialized ONNX model of `model` (CPU, float32, eval) and the exporter that made it.

    ExportError (one line) when no exporter manages; the first exporter's error is the one reported."""
    outputs = [LOGITS, PROBABILITIES] if config.probabilities else [LOGITS]
    wrapped = _Deployable(model, config.probabilities).eval()
    # Batch 2 for the example: a batch of 1 can be specialized into the graph as a constant.
    example = torch.rand(2 if config.dynamic_batch else 1, 3, input_size, input_size,
                         generator=torch.Generator().manual_seed(0))
    order = {"auto": ("torchscript", "dynamo"), "torchscript": ("torchscript",), "dynamo": ("dynamo",)}
    errors: list[str] = []
    for name in order[config.exporter]:
        if name == "dynamo" and config.exporter == "auto" and _dynamo_missing() and errors:
            break  # a fallback that cannot run here: report the TorchScript exporter's error alone
        make = _torchscript_bytes if name == "torchscript" else _dynamo_bytes
        try:
            # The exporters warn (deprecation, tracer notes on shape arithmetic that is constant here:
            # the input size is fixed) and the torch.export one prints progress: none of it is ours to show.
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
                warnings.simplefilter("ignore")
                data = make(wrapped, example, outputs, config.opset, config.dynamic_batch)
            return data, name
        except Exception as e:  # any failure of an exporter is reported in one line, never a traceback
            errors.append(f"{name} exporter: {_first_line(e)}")
    raise ExportError("cannot export this model to ONNX (" + "; ".join(errors) + ")")


def add_metadata(data: bytes, props: dict[str, str], doc: str) -> bytes:
    """`data` with `props` in its metadata_props (replacing same-named entries) and a doc string."""
    onnx = require_onnx()
    model = onnx.load_from_string(data)
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for key, value in [*kept, *props.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    model.doc_string = doc
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise ExportError(f"the exported model is not valid ONNX ({_first_line(e)})") from None
    return model.SerializeToString()


def read_metadata(path: str | Path) -> dict[str, str]:
    """metadata_props of an ONNX file, as a dict (what a deployment reads the class names from)."""
    onnx = require_onnx()
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def verify(data: bytes, model: nn.Module, input_size: int, config: ExportConfig, runtime) -> Verification:
    """Run `data` in onnxruntime on random images (batch 1 and 3; 1 twice for a fixed batch) and
    compare with `model`'s outputs; ExportError when they differ by more than the tolerance."""
    try:
        session = runtime.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(f"onnxruntime cannot load the exported model ({_first_line(e)}); try a lower --opset") \
            from None
    generator = torch.Generator().manual_seed(1)
    batches = (1, 3) if config.dynamic_batch else (1, 1)
    worst, scale = 0.0, 0.0
    for batch in batches:
        x = torch.rand(batch, 3, input_size, input_size, generator=generator)
        with torch.no_grad():
            logits = model(x).float()
        expected = [logits, logits.softmax(1)] if config.probabilities else [logits]
        try:
            got = session.run(None, {INPUT_NAME: x.numpy()})
        except Exception as e:
            raise ExportError(f"onnxruntime cannot run the exported model ({_first_line(e)})") from None
        for want, have in zip(expected, got):
            have = torch.from_numpy(have)
            if tuple(have.shape) != tuple(want.shape):
                raise ExportError(f"onnxruntime returned shape {tuple(have.shape)} where PyTorch returns "
                                  f"{tuple(want.shape)}; the model was not written")
            worst = max(worst, (have - want).abs().max().item())
        scale = max(scale, logits.abs().max().item())
    tolerance = RELATIVE_TOLERANCE * max(1.0, scale)
    if not worst <= tolerance:  # NaN fails too
        raise ExportError(f"onnxruntime's outputs differ from PyTorch's by up to {worst:.3g} (tolerance "
                          f"{tolerance:.3g}); the model was not written")
    return Verification(f"onnxruntime {runtime.__version__}", batches, worst, scale, tolerance)


def export(loaded, path: str | Path, opset: int = 18, dynamic_batch: bool = True, probabilities: bool = True,
           verify_with_runtime: bool = True, exporter: str = "auto", extra_metadata: dict | None = None
           ) -> ExportResult:
    """Export `loaded` (a `predict.LoadedRun`) to the ONNX file `path` (see the module docstring).

    Checks the output path and the onnx package first; the file appears only complete and (when
    onnxruntime is installed and `verify_with_runtime`) verified. Raises ExportError/OutputError."""
    from ..runinfo import versions
    from .predict import _check_loaded

    start = time.perf_counter()
    config = ExportConfig(opset, dynamic_batch, probabilities, verify_with_runtime, exporter).validate()
    onnx = require_onnx()
    out = check_output(path)
    _check_loaded(loaded)  # (a raw AttributeError before)
    if extra_metadata is not None and not isinstance(extra_metadata, dict):
        raise ExportError(f"extra_metadata must be a dict (or None), not {type(extra_metadata).__name__}")
    model = loaded.model
    param = next(model.parameters(), None)
    if param is not None and (param.device.type != "cpu" or param.dtype != torch.float32):
        model = copy.deepcopy(model).to("cpu", torch.float32)  # export on the CPU in float32; leave the caller's
    model.eval()
    size = int(loaded.input_size)
    data, used = to_onnx_bytes(model, size, config)

    outputs = (LOGITS, PROBABILITIES) if probabilities else (LOGITS,)
    batch = "batch" if dynamic_batch else 1
    props = {"classes": json.dumps(list(loaded.classes)), "input_size": str(size), "input": INPUT_CONVENTION,
             "outputs": ", ".join(outputs), "model": str(loaded.config.model),
             "convscope": json.dumps({"export": config.to_dict(), "exporter": used,
                                      "versions": {**versions(), "onnx": onnx.__version__},
                                      "run_config": loaded.config.to_dict(), **(extra_metadata or {})})}
    doc = (f"convscope classifier {loaded.config.model}: input '{INPUT_NAME}' [{batch}, 3, {size}, {size}] "
           f"RGB in [0, 1]; outputs {', '.join(repr(o) for o in outputs)} over {len(loaded.classes)} classes "
           "(names in metadata 'classes')")
    data = add_metadata(data, props, doc)

    verification, reason = None, None
    runtime = onnxruntime_or_none() if verify_with_runtime else None
    if runtime is not None:
        verification = verify(data, model, size, config, runtime)
    else:
        reason = "not verified (pip install onnxruntime)" if verify_with_runtime else "not verified (--no-verify)"
    write_atomic(out, lambda f: f.write(data))
    return ExportResult(out, used, opset, len(data), (batch, 3, size, size), outputs, list(loaded.classes),
                        verification, reason, time.perf_counter() - start)

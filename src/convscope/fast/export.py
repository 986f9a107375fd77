"""A feed-forward style model as ONNX: input "image" float32 [batch, 3, H, W] RGB in [0, 1] (any
H and W), output "stylized", same shape. The model card travels in metadata_props["convscope"].
onnxruntime (when installed) checks the file against PyTorch at two sizes before it is written."""

from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path

import torch

from ..classify.export import (ExportError, _fd1_to_devnull, _first_line, _has_dynamo_flag, check_output,
                               onnxruntime_or_none, require_onnx)
from ..images import write_atomic
from .models import STYLE_KIND, builtin_names, load_model

# onnxruntime runs each of these (batch, 3, H, W) through the file and PyTorch before it is written:
# odd sizes, and small ones, where the network pads by replicating rather than reflecting.
CHECK_SHAPES = ((1, 3, 77, 101), (2, 3, 128, 96), (1, 3, 9, 14), (1, 3, 1, 1))

# The newest opset this torch's exporter writes (23 in torch 2.14; 20 in torch 2.4); above it, it
# fails with a bare "Unsupported onnx_opset_version".
MAX_OPSET = getattr(getattr(torch.onnx, "_constants", None), "ONNX_MAX_OPSET", 20)
TOLERANCE = 2e-3  # sigmoid outputs in [0, 1]; float32 kernels of two runtimes differ by ~1e-6


def export_onnx(model: str, out: str | Path, opset: int = 17) -> dict:
    onnx = require_onnx()
    path = check_output(out)
    if isinstance(opset, bool) or not isinstance(opset, int):  # ('17' was a TypeError, 17.0 the exporter's)
        raise ExportError(f"--opset must be a whole number, not {opset!r}")
    if not 11 <= opset <= MAX_OPSET:
        raise ExportError(f"--opset must be between 11 and {MAX_OPSET} (17 is a safe choice), not {opset}")
    loaded = load_model(model, STYLE_KIND, "cpu",
                        wrong_kind_hint="; export-onnx exports feed-forward styles (convscope styles lists them)")
    net = loaded.net.float().eval()
    example = torch.rand(1, 3, 64, 96)
    buf = io.BytesIO()
    extra = {"dynamo": False} if _has_dynamo_flag() else {}
    try:
        with warnings.catch_warnings(), _fd1_to_devnull():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (example,), buf, input_names=["image"],
                              output_names=["stylized"], opset_version=opset, do_constant_folding=True,
                              dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                            "stylized": {0: "batch", 2: "height", 3: "width"}}, **extra)
    except Exception as exc:
        raise ExportError(f"ONNX export failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    proto = onnx.load_from_string(buf.getvalue())
    entry = proto.metadata_props.add()
    # The built-in's name, or the file's name: not the path, which would tell where this machine keeps it.
    source = model if model in builtin_names(STYLE_KIND) else Path(loaded.source).name
    entry.key, entry.value = "convscope", json.dumps({"kind": STYLE_KIND, "source": source,
                                                      "card": loaded.card, "input": "float32 RGB [0, 1] NCHW"})
    data = proto.SerializeToString()
    diff = None
    ort = onnxruntime_or_none()
    if ort is not None:
        try:
            session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        except Exception as exc:  # e.g. an opset or operator this onnxruntime does not have
            raise ExportError(f"onnxruntime cannot load the exported model ({_first_line(exc)}); not written; "
                              f"try another --opset (17 is a safe choice)") from None
        diff = 0.0
        for shape in CHECK_SHAPES:
            x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
            with torch.inference_mode():
                want = net(x).numpy()
            try:
                got = session.run(None, {"image": x.numpy()})[0]
            except Exception as exc:
                raise ExportError(f"onnxruntime cannot run the exported model on a {shape[3]}x{shape[2]} image "
                                  f"({_first_line(exc)}); not written") from None
            if got.shape != want.shape:
                raise ExportError(f"the exported model returned shape {got.shape} for input {shape}; not written")
            gap = float(abs(got - want).max())
            diff = gap if math.isnan(gap) or gap > diff else diff  # max() would drop a NaN
        if not diff <= TOLERANCE:
            raise ExportError(f"onnxruntime disagrees with PyTorch by {diff:.3g} (> {TOLERANCE}); not written")
    write_atomic(path, lambda f: f.write(data))
    return {"path": str(path), "max_abs_diff": diff, "bytes": len(data)}

"""Device helpers: what a CPU is called and whether it computes bfloat16 natively."""

from __future__ import annotations

import json

from PIL import Image

from convscope.cli import main
from convscope.devices import cpu_has_native_bf16, cpu_model_name


def test_cpu_model_name_and_bf16_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Example 9000 16-Core Processor\n"
                    "flags\t\t: fpu sse2 avx512f avx512_bf16\n")
    assert cpu_model_name(str(info)) == "Example 9000 16-Core Processor"
    assert cpu_has_native_bf16(str(info))
    info.write_text("flags\t\t: fpu sse2 avx512f\n")  # AVX-512 without BF16: emulated, not native
    assert not cpu_has_native_bf16(str(info))
    assert cpu_model_name(str(info))  # no model name: the platform's answer, never empty
    assert cpu_model_name(str(tmp_path / "missing")) and not cpu_has_native_bf16(str(tmp_path / "missing"))


def test_a_cpu_runs_sidecar_names_the_processor(tmp_path):
    # It said "x86_64" (Python's platform.processor() is empty on Linux).
    Image.new("RGB", (40, 30), (20, 120, 200)).save(tmp_path / "p.png")
    out = tmp_path / "o.png"
    assert main(["stylize", str(tmp_path / "p.png"), "--model", "starry_night", "-o", str(out), "--device", "cpu",
                 "-q"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["device_name"] == cpu_model_name()

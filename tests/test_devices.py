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


def test_available_memory_from_meminfo(tmp_path):
    import torch

    from convscope.devices import available_memory

    info = tmp_path / "meminfo"
    info.write_text("MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\n")
    assert available_memory(torch.device("cpu"), str(info)) == 20000000 * 1024
    info.write_text("MemTotal:       24000000 kB\n")  # an old kernel without the line
    assert available_memory(torch.device("cpu"), str(info)) is None
    assert available_memory(torch.device("cpu"), str(tmp_path / "none")) is None


def test_an_image_too_large_for_the_memory_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    # texture --size 8192 8192 was killed by the system for memory (exit 137, no message) on a 24 GB
    # machine; stylize likewise at its largest sizes.
    import convscope.devices as devices

    monkeypatch.setattr(devices, "available_memory", lambda device, meminfo="": 5 * 10**8)  # 0.5 GB free
    src = tmp_path / "s.png"
    Image.new("RGB", (64, 48), (120, 60, 30)).save(src)
    out = tmp_path / "o.png"
    one = ["--iterations", "1", "-o", str(out), "-q"]
    assert main(["texture", str(src), "--size", "1000", "750", *one]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a 1000x750 texture needs at least 0.8 GB of memory" in err, err
    assert "more than the 0.5 GB available on cpu; use a smaller --size" in err
    assert main(["stylize", str(src), str(src), "--size", "1000", *one]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stylizing at 1000x750 needs at least 0.8 GB" in err, err
    assert not list(tmp_path.glob("o*"))
    # What fits runs (the check takes the images' pixels, not their sides alone).
    assert main(["texture", str(src), "--size", "48", "40", "--iterations", "2", "-o", str(out), "-q"]) == 0


def _no_optimization(monkeypatch):
    """The engines' optimizations fail at once if reached: a check that lets a size through must not
    start a long run here."""
    import convscope.style.gatys as gatys
    import convscope.vis.invert as invert
    import convscope.vis.texture as texture

    def started(*args, **kwargs):
        raise AssertionError("the optimization started")

    for module in (gatys, invert, texture):
        monkeypatch.setattr(module, "optimize_image", started)


def test_the_optimizers_memory_counts_in_the_check(tmp_path, capsys, monkeypatch):
    # L-BFGS keeps 100 pairs of image-sized vectors (2.4 KB a pixel), more than the activations:
    # invert --size 4096 allocated 7 GB and failed on them a minute later; stylize and texture
    # counted the activations alone, and invert checked nothing.
    import convscope.devices as devices

    monkeypatch.setattr(devices, "available_memory", lambda device, meminfo="": 5 * 10**8)  # 0.5 GB free
    _no_optimization(monkeypatch)
    src = tmp_path / "s.png"
    Image.new("RGB", (64, 48), (120, 60, 30)).save(src)
    out = tmp_path / "o.png"
    for argv, what in ((["texture", str(src), "--size", "640", "480"], "a 640x480 texture"),
                       (["stylize", str(src), str(src), "--size", "640"], "stylizing at 640x480"),
                       (["invert", str(src), "--size", "640"], "inverting at 640x480")):
        assert main([*argv, "-o", str(out), "-q"]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{what} needs at least" in err, err
        assert "for the network's activations and the optimizer's state, more than the 0.5 GB" in err
    assert not list(tmp_path.glob("o*"))


def test_a_forward_pass_too_large_for_the_memory_is_refused(tmp_path, capsys, monkeypatch):
    # activations --size 8192 on VGG19 needs 26 GB or more (two 64-channel float32 maps of 50M
    # pixels at conv1_2): the system would kill it on a 24 GB machine; it is now refused. The bound
    # is measured on the net asked for, so a lighter net fits where VGG19 does not.
    import convscope.devices as devices
    from convscope.nets import get_net
    from convscope.nets.memory import bytes_per_pixel

    vgg = get_net("vgg19")
    assert bytes_per_pixel(vgg, ["relu3_1"]) == 2 * 64 * 4  # conv1_2's float32 input and output
    assert bytes_per_pixel(vgg, ["conv1_1"]) == (3 + 64) * 4
    free = 10**6
    monkeypatch.setattr(devices, "available_memory", lambda device, meminfo="": free)
    src = tmp_path / "s.png"
    Image.new("RGB", (64, 48), (120, 60, 30)).save(src)
    out = tmp_path / "o.png"
    assert main(["activations", str(src), "--layer", "relu3_1", "--size", "64", "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vgg19 up to relu3_1 at 64x48 needs at least 0.0 GB" in err, err
    assert not out.exists()
    assert 64 * 48 * bytes_per_pixel(vgg, ["conv1_1"]) < free  # the first layer alone fits
    assert main(["activations", str(src), "--layer", "conv1_1", "--size", "64", "-o", str(out), "-q"]) == 0


def test_running_out_of_memory_on_the_cpu_says_so(tmp_path, capsys, monkeypatch):
    # It said "the device ran out of memory; use a smaller --size or --device cpu" on the CPU too.
    import convscope.vis.invert as invert

    def allocate(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 30000000000 bytes.")

    monkeypatch.setattr(invert, "optimize_image", allocate)
    src = tmp_path / "s.png"
    Image.new("RGB", (64, 48), (120, 60, 30)).save(src)
    assert main(["invert", str(src), "--size", "32", "-o", str(tmp_path / "o.png"), "-q", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err == "convscope: error: the CPU ran out of memory; use a smaller --size or --batch-size\n"

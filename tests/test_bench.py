"""The benchmark scripts in bench/ are not part of the package, so nothing else notices when a change
to the library breaks one; a GPU session that finds out costs its scarce minutes. These checks are
cheap: every script imports against the working tree, and the quick-check settings of bench/vis.py
and bench/cifar10.py are still accepted."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from convscope.cli import build_parser

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.name != "common.py")


def bench_module(name: str):
    """bench/NAME.py as a module, imported as running the script would (bench/ first on the path)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


def test_every_bench_script_imports():
    # One subprocess for all of them (torch is imported once): a moved or renamed function shows here.
    code = ("import importlib.util, sys\n"
            f"sys.path.insert(0, {str(BENCH)!r})\n"
            f"for path in {[str(p) for p in SCRIPTS]!r}:\n"
            "    name = 'bench_' + path.rsplit('/', 1)[-1][:-3]\n"
            "    spec = importlib.util.spec_from_file_location(name, path)\n"
            "    sys.modules[name] = module = importlib.util.module_from_spec(spec)\n"  # dataclasses look it up
            "    spec.loader.exec_module(module)\n")
    env = {**os.environ, "PYTHONPATH": str(BENCH.parent / "src")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_vis_smoke_settings_parse_for_every_command(tmp_path):
    vis = bench_module("vis")
    assert set(vis.SMOKE) == set(vis.COMMANDS)
    for command, (positional, _, _) in vis.COMMANDS.items():
        args = [a.format(photo="p.jpg", painting="s.jpg", folder="photos") for a in positional]
        try:
            build_parser().parse_args([command, *args, *vis.EXTRA.get(command, []), *vis.SMOKE[command],
                                       "-o", str(tmp_path / "out.png"), "--device", "cpu", "-q"])
        except SystemExit:
            pytest.fail(f"convscope {command} no longer takes bench/vis.py's --smoke settings {vis.SMOKE[command]}")


def test_cifar10_limit_copies_the_first_images_of_each_class(tmp_path):
    cifar10 = bench_module("cifar10")
    root = tmp_path / "cifar10-jpeg"
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(4):
                (root / split / cls / f"{i:04d}.jpg").write_bytes(b"x")
    os.utime(root / "train" / "cat" / "0000.jpg", (1_000_000, 1_000_000))
    sub = cifar10.first_per_class(root, 2)
    assert sub == tmp_path / "cifar10-jpeg-first2"
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            assert sorted(p.name for p in (sub / split / cls).iterdir()) == ["0000.jpg", "0001.jpg"]
    # mtimes kept: convscope's decoded-image cache keys on them
    assert (sub / "train" / "cat" / "0000.jpg").stat().st_mtime == 1_000_000
    assert cifar10.first_per_class(root, 2) == sub  # a second call reuses the copy


def test_cifar10_unpack_redoes_an_unpack_cut_short(tmp_path):
    # train/ and test/ folders left by a killed unpack were taken for the whole data set.
    import tarfile

    cifar10 = bench_module("cifar10")
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "test"):
        src = tmp_path / "src" / split / "cat"
        src.mkdir(parents=True)
        for i in range(3):
            (src / f"{i}.jpg").write_bytes(b"x")
        with tarfile.open(data / f"cifar10-jpeg-{split}.tar.xz", "w:xz") as tar:
            tar.add(src.parent, arcname=split)
    cache = tmp_path / "cache"
    (cache / "cifar10-jpeg" / "train" / "cat").mkdir(parents=True)  # what a kill left: one file, no test/ images
    (cache / "cifar10-jpeg" / "train" / "cat" / "0.jpg").write_bytes(b"x")
    (cache / "cifar10-jpeg" / "test" / "cat").mkdir(parents=True)
    root = cifar10.unpack(cache, data)
    for split in ("train", "test"):
        assert sorted(p.name for p in (root / split / "cat").iterdir()) == ["0.jpg", "1.jpg", "2.jpg"]
    (root / "test" / "cat" / "2.jpg").unlink()
    assert cifar10.unpack(cache, data) == root and not (root / "test" / "cat" / "2.jpg").exists()  # done: kept


def test_gpu_session_script_parses_and_refuses_an_unknown_step(tmp_path):
    script = BENCH / "gpu_session.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0  # no syntax error anywhere in it
    done = subprocess.run(["bash", str(script), "no-such-step"], capture_output=True, text=True,
                          env={**os.environ, "OUT": str(tmp_path)})
    assert done.returncode == 2 and "gpu_session.sh prepare" in done.stdout  # its usage, and nothing run
    assert not list(tmp_path.iterdir())

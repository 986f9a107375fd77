"""One writer per training output (convscope.runlock): a second process is refused in one line and
touches nothing; a killed holder frees the lock; a stale lock file is no obstacle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from convscope.cli import main
from convscope.runlock import RUN_LOCK, BusyError, exclusive
from test_classify_cli import make_folder

SRC = str(Path(__file__).resolve().parents[1] / "src")
HOLD = """
import sys, time
from pathlib import Path
from convscope.runlock import exclusive
with exclusive(Path(sys.argv[1]), "x"):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture()
def holder():
    """Start a process that holds a lock file; yields a function taking the path; killed at the end."""
    procs = []

    def hold(path: Path) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True, env=env)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_second_process_is_refused_until_the_holder_dies(tmp_path, holder):
    lock = tmp_path / ".out.lock"
    proc = holder(lock)
    with pytest.raises(BusyError, match=rf"the output is being written by another training process \(pid {proc.pid}\)"):
        with exclusive(lock, "the output"):
            pass
    assert lock.exists()  # the refused process left the holder's file alone
    os.kill(proc.pid, signal.SIGKILL)  # however it dies, the OS lets go of its lock
    proc.wait()
    with exclusive(lock, "the output"):
        assert lock.read_text().strip() == str(os.getpid())
        with exclusive(lock, "the output"):  # taken again inside the same process: no deadlock, no refusal
            pass
        assert lock.exists()
    assert not lock.exists()  # removed on the way out


def test_another_thread_of_this_process_is_refused_too(tmp_path):
    import threading

    lock, seen = tmp_path / ".out.lock", []
    inside, leave = threading.Event(), threading.Event()

    def first():
        with exclusive(lock, "the output"):
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(10)
    try:
        with exclusive(lock, "the output"):
            seen.append("entered")
    except BusyError as e:
        seen.append(str(e))
    leave.set()
    thread.join()
    assert seen == ["the output is being written by another training in this process; wait for it to finish"]
    with exclusive(lock, "the output"):  # free again once the other thread let go
        pass


def test_a_run_folder_in_use_is_refused_and_left_alone(tmp_path, holder, capsys):
    data = make_folder(tmp_path / "data", n_train=4, n_test=2, size=8, corrupt=False)
    run = tmp_path / "run"
    base = ["classify", "train", "--data", str(data), "--batch-size", "4", "--input-size", "8", "--device", "cpu",
            "--cache-dir", str(tmp_path / "c"), "-q"]
    assert main(base + ["-o", str(run), "--epochs", "1"]) == 0
    assert not (run / RUN_LOCK).exists()
    capsys.readouterr()
    proc = holder(run / RUN_LOCK)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    assert main(base + ["-o", str(run), "--epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"the run folder {run} is being written by another training process (pid {proc.pid})" in err
    assert len(err.splitlines()) == 1
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before  # nothing written or removed
    # A new run into a folder another process has just started in: refused, and the folder stays.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    holder(fresh / RUN_LOCK)
    assert main(base + ["-o", str(fresh), "--epochs", "1"]) == 2
    assert "being written by another training process" in capsys.readouterr().err
    assert [p.name for p in fresh.iterdir()] == [RUN_LOCK]


def test_a_stale_lock_file_is_no_obstacle(tmp_path):
    data = make_folder(tmp_path / "data", n_train=4, n_test=2, size=8, corrupt=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_LOCK).write_text("12345\n")  # left by a process that was killed: nobody holds it
    assert main(["classify", "train", "--data", str(data), "-o", str(run), "--epochs", "1", "--batch-size", "4",
                 "--input-size", "8", "--device", "cpu", "--cache-dir", str(tmp_path / "c"), "-q"]) == 0
    assert (run / "model.safetensors").exists() and not (run / RUN_LOCK).exists()

"""One writer per training output: an advisory lock held while a run writes its files.

Two processes training into the same run folder (or the same style file) at once, say a second
`--resume` started while the first still runs, would overwrite each other's checkpoints and
delete each other's temp files mid-write. The second one is refused instead, in one line.

The lock is an OS file lock (flock on POSIX, a byte-range lock on Windows) on a small hidden file
beside the outputs. The OS drops it when its process dies, however it dies, so a `kill -9` leaves no
stale lock behind: the file itself may stay, and the next run simply takes it. A filesystem that
has no locks (some network mounts) runs unlocked rather than refusing to train.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError

# The lock of a run folder lives inside it; RunDir's "is this folder empty" checks ignore it.
RUN_LOCK = ".convscope.lock"


class BusyError(OutputError):
    """Another process is writing the same training output."""


def lock_beside(path: Path) -> Path:
    """The lock file of an output file: hidden, beside it (`.my_style.safetensors.lock`)."""
    return path.with_name(f".{path.name}.lock")


# Locks this process holds (real path -> the thread holding it): taking one again in the same thread
# is a no-op, so the CLI can lock before it writes anything and the engine it calls still locks for
# API callers; another thread of this process is refused like another process.
_HELD: dict[str, int] = {}
_HELD_LOCK = threading.Lock()


@contextlib.contextmanager
def exclusive(lock: Path, what: str) -> Iterator[None]:
    """Hold `lock` for the block, or raise BusyError naming `what` (the output, as the user knows it)
    when another process holds it. The lock file is removed on the way out."""
    lock = Path(lock)
    key = os.path.join(os.path.realpath(lock.parent), lock.name)
    with _HELD_LOCK:
        holder = _HELD.get(key)
        if holder == threading.get_ident():
            owned = False
        elif holder is not None:
            raise BusyError(f"{what} is being written by another training in this process; wait for it to finish")
        else:
            fd = _acquire(lock, what)
            _HELD[key] = threading.get_ident()
            owned = True
    if not owned:
        yield
        return
    try:
        yield
    finally:
        with _HELD_LOCK:
            del _HELD[key]
            if fd is not None:
                _release(lock, fd)


def _acquire(lock: Path, what: str) -> int | None:
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return None  # a folder the run cannot write to fails at its first real write, with its own message
        try:
            _lock(fd)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise BusyError(f"{what} is being written by another training process{holder}; wait for it to "
                            "finish or stop it, then run this again") from None
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return None  # no locks on this filesystem: go on unlocked
            raise
        # A holder that finished between our open and our lock removed the file we hold: that lock
        # guards nothing (a third process can create and lock a new file), so try again.
        try:
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _release(lock: Path, fd: int) -> None:
    # Remove the file while still holding it, then let go (see _acquire for a process that had it open).
    with contextlib.suppress(OSError):
        os.unlink(lock)
    with contextlib.suppress(OSError):
        _unlock(fd)
    os.close(fd)


def _holder(fd: int) -> str:
    """' (pid N)' from the lock file, or '' when it says nothing usable."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {text})" if text.isdigit() else ""


try:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError when held elsewhere

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
except ImportError:  # Windows (not tested here: the project's machines are Linux)
    import msvcrt

    def _lock(fd: int) -> None:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except PermissionError as e:  # Windows says "permission denied" for a held region
            raise BlockingIOError(str(e)) from None

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

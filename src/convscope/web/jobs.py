"""Running an engine for the web UI: in a worker thread, streaming its progress, cancellable.

An engine reports through a callback (convscope.optimize.Progress). `stream` runs the engine in a
worker thread and turns those reports into a generator the page iterates, so each Gradio event
can yield live previews. Closing the generator (Gradio does when a user cancels or leaves) sets
the job's cancel flag; the callback then raises `Cancelled` inside the engine, which unwinds it.
A tab's Stop button (a `StopSwitch` per browser session) instead raises `StopRequested`, which the
optimizing engines take as Ctrl-C: they end with `Interrupted` carrying the best image so far;
a job stopped while it still waits in Gradio's queue ends as it starts, with nothing to keep.
Whatever way a job ends, its memory is released (and the CUDA cache emptied).

A per-app `DeviceSlots` semaphore bounds how many engines run at once, so a cancelled job still
unwinding cannot overlap the next one on the device beyond the configured concurrency.
"""

from __future__ import annotations

import contextlib
import gc
import queue
import threading
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..errors import UserError
from ..optimize import Interrupted, Progress


class Cancelled(Exception):
    """The user cancelled the job (raised from the engine's progress callback)."""


class StopRequested(KeyboardInterrupt):
    """The user pressed Stop: raised from the progress callback, where the optimizing engines take
    it as Ctrl-C and raise `Interrupted` with the best image so far. (A Stop before the engine
    starts ends the job at `Job.check` instead, with nothing to keep.)"""


NOT_STARTED = "stopped before it started: nothing to keep"


def free_memory() -> None:
    """Drop what a finished, cancelled or failed job left behind, CUDA's cached blocks included."""
    gc.collect()
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


class DeviceSlots:
    """At most `n` engines at once (the same number as Gradio's concurrency limit)."""

    def __init__(self, n: int):
        self.n = n
        self._sem = threading.BoundedSemaphore(n)

    def __enter__(self):
        self._sem.acquire()
        return self

    def __exit__(self, *exc):
        self._sem.release()


@dataclass
class Tick:
    """One update for the page: the latest progress (image: the latest preview, if any)."""

    progress: Progress
    image: object | None   # [1, 3, H, W] tensor of the newest preview since the last tick, or None
    done: float            # fraction of the whole job done, 0..1
    eta: float | None      # seconds left (estimated), None before the first report


_END = object()


class Job:
    def __init__(self):
        self.cancelled = threading.Event()
        self.stop = threading.Event()
        self.events: queue.Queue = queue.Queue()

    def callback(self, p: Progress) -> None:
        if self.cancelled.is_set():
            raise Cancelled()
        if self.stop.is_set():
            raise StopRequested()
        self.events.put(p)

    def check(self) -> None:
        """For engines without progress reports: stop between steps when cancelled (or stopped:
        before an engine's first report there is nothing to keep)."""
        if self.cancelled.is_set():
            raise Cancelled()
        if self.stop.is_set():
            raise Cancelled(NOT_STARTED)


class StopSwitch:
    """One tab's Stop button for one browser session (the page keeps one in a gr.State): `press`
    stops the tab's job, whether it runs or still waits in Gradio's queue. The page calls `submit`
    as Gradio queues the job (the event's validator runs then, server-side, and only for a job the
    queue takes), so a press from then on reaches it; a press with no job queued or running is
    dropped, so it cannot stop a job started later, and each job gets a new Job, so a press for
    one cannot stop the next."""

    def __init__(self):
        self._lock = threading.Lock()
        self._job: Job | None = None  # the tab's job, from when it is queued until it ends
        # None (no job), "queued" (in Gradio's queue), "started" (its handler reads the form),
        # "running" (its engine took the job: `stream`), "one-pass" (a method without Stop)
        self._state: str | None = None

    def __deepcopy__(self, memo) -> StopSwitch:
        """A new switch: Gradio deep-copies a gr.State's value for each API session (a lock cannot be
        copied, and a copy must not share the original's job)."""
        return StopSwitch()

    def submit(self) -> None:
        """A job for this tab was queued: a new Job, which `stream` adopts when the job starts."""
        with self._lock:
            self._job, self._state = Job(), "queued"

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Around the page's handler for the queued job: a job stopped while it waited ends at once
        (`Cancelled`, saying it had not started), and however the handler ends (a form error before
        the engine starts, a one-pass method that takes no Stop), the switch lets go of its job."""
        with self._lock:
            job = self._job if self._state == "queued" else None
            if job is not None:
                self._state = "started"
        try:
            if job is not None:
                job.check()
            yield
        finally:
            if job is not None:
                self.detach(job)

    def attach(self) -> Job:
        """The engine starts: the Job queued for it (stopped if Stop was pressed since it was
        queued), or a new one where none waits (an API call racing another of its session, a test)."""
        with self._lock:
            if self._job is None or self._state not in ("queued", "started"):
                self._job = Job()
            self._state = "running"
            return self._job

    def one_pass(self) -> None:
        """The handler runs a method that takes no Stop (a one-pass stylization): a press is not
        acknowledged as if it would stop it."""
        with self._lock:
            if self._job is not None:
                self._state = "one-pass"

    def detach(self, job: Job) -> None:
        with self._lock:
            if self._job is job:
                self._job, self._state = None, None

    def withdraw(self) -> None:
        """Cancel was pressed: a job still waiting is dropped from Gradio's queue (a running one
        detaches itself as it unwinds)."""
        with self._lock:
            if self._state == "queued":
                self._job, self._state = None, None

    def press(self) -> str | None:
        """Ask the tab's job to stop: "queued" (it will end before it starts), "running" (its engine
        runs or is about to start, and keeps its image so far), or None when there is no job that
        Stop can end (and nothing is kept for a later job)."""
        with self._lock:
            if self._job is None or self._state == "one-pass":
                return None
            self._job.stop.set()
            return "queued" if self._state == "queued" else "running"


def fraction(p: Progress) -> float:
    """How much of the job is done: stages count equally (coarse stages are cheaper per iteration
    but run more iterations: roughly a wash), iterations evenly within a stage."""
    stages = max(p.stages, 1)
    return min(1.0, ((p.stage - 1) + p.iteration / max(p.iterations, 1)) / stages)


def stream(work: Callable[[Job], object], slots: DeviceSlots, interval: float = 0.4,
           switch: StopSwitch | None = None) -> Iterator[Tick | tuple]:
    """Run `work(job)` in a worker thread; yield a Tick at most every `interval` seconds (and at
    once when a preview image arrives), then ("result", value). The worker's exception is raised
    here (Cancelled, and Interrupted after a Stop, included); closing the generator cancels the job
    without waiting for it. `switch`, when given, can stop the job (it may have been stopped already,
    while it waited in the queue: it then ends at its first check)."""
    job = switch.attach() if switch is not None else Job()
    box: dict = {}

    def worker() -> None:
        try:
            with slots:
                job.check()  # cancelled while waiting for a slot
                box["value"] = work(job)
        except BaseException as exc:  # noqa: BLE001 (handed to the generator, which raises it)
            # Keep the trace as text and drop the frames: they hold the engine's tensors, which
            # must be freed now, not when the page's handler lets go of the exception.
            box["trace"] = traceback.format_exc()
            box["error"] = exc.with_traceback(None)
            del exc
        finally:
            free_memory()
            job.events.put(_END)

    thread = threading.Thread(target=worker, name="convscope-web-job", daemon=True)
    thread.start()
    try:
        last_tick = 0.0
        latest, image = None, None
        while True:
            try:
                item = job.events.get(timeout=interval)
            except queue.Empty:
                item = None
            ended = item is _END
            if isinstance(item, Progress):
                latest = item
                if item.image is not None:
                    image = item.image
            now = time.monotonic()
            if latest is not None and (ended or image is not None or now - last_tick >= interval):
                done = fraction(latest)
                eta = latest.elapsed * (1 - done) / done if done > 0 else None
                yield Tick(latest, image, done, eta)
                latest, image, last_tick = None, None, now
            if ended:
                break
        if "error" in box:
            error = box["error"]
            if isinstance(error, StopRequested):  # stopped before the engine had an image to keep
                raise Cancelled(NOT_STARTED)
            if not isinstance(error, (UserError, Cancelled, Interrupted)):
                print(f"convscope serve: a job failed:\n{box['trace']}", file=sys.stderr)  # the server log
                with contextlib.suppress(AttributeError):
                    error.logged = True  # the page need not log it again
            raise error
        yield ("result", box["value"])
    finally:
        job.cancelled.set()  # no-op after the end; on close (cancel, disconnect) stops the engine
        if switch is not None:
            switch.detach(job)


def describe(tick: Tick, what: str = "") -> str:
    """'stage 1/2 · iteration 40/100 · loss 1.234 (content 0.5, style 0.7) · 12 s · ETA 18 s'"""
    p = tick.progress
    parts = [what] if what else []
    if p.stages > 1:
        parts.append(f"stage {p.stage}/{p.stages}")
    parts.append(f"iteration {p.iteration}/{p.iterations}")
    terms = ", ".join(f"{k} {v:.4g}" for k, v in p.terms.items() if k != "loss")
    parts.append(f"loss {p.loss:.4g}" + (f" ({terms})" if terms else ""))
    parts.append(f"{p.elapsed:.0f} s")
    if tick.eta is not None:
        parts.append(f"ETA {tick.eta:.0f} s")
    return " · ".join(parts)

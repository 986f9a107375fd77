"""Load test of the web UI: N simultaneous small fast-stylization requests through Gradio's queue.

Starts `convscope serve` on a free loopback port as a separate process (or uses --url, which must
be a loopback address), then sends --requests requests at once, each from its own client
(gradio_client, the queue API a browser uses): a small synthetic photo through a built-in
feed-forward style. Reports completed / failed, latency (submit to result, so queue waiting is
included) p50 / p95 / max, and throughput; checks each result image has the content's size.
All requests must complete: the script prints PASS or FAIL and exits 1 on FAIL.

    python bench/web_load.py                        # 20 requests, concurrency 1 (the default)
    python bench/web_load.py --requests 20 --concurrency 2 --size 256 --json web_load.json
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))  # this checkout's convscope, installed or not
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from common import finish  # noqa: E402

START_TIMEOUT = 120.0   # seconds for the server to answer
REQUEST_TIMEOUT = 600.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen | None) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"error: the server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"error: no answer from {url} within {START_TIMEOUT:.0f} s")


def start_server(concurrency: int, log) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "convscope.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--concurrency", str(concurrency)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}/"


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)  # what Ctrl-C does: Gradio closes, convscope cleans its temp folder
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def synthetic_photo(w: int, h: int) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w] / (w / 9)
    a = np.stack([np.sin(x + c) * np.cos(y - c) for c in (0.0, 1.0, 2.0)], -1) * 0.4 + 0.5
    return Image.fromarray((a.clip(0, 1) * 255).astype(np.uint8))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="an already running server (loopback only); default: start one")
    p.add_argument("--requests", type=int, default=20, help="simultaneous requests (default: 20)")
    p.add_argument("--concurrency", type=int, default=1, help="the started server's --concurrency (default: 1)")
    p.add_argument("--style", default="starry_night", help="built-in feed-forward style (default: starry_night)")
    p.add_argument("--size", type=int, default=128, help="long side of the content photo, px (default: 128)")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    a = p.parse_args()
    if not 1 <= a.requests <= 200:
        sys.exit("error: --requests must be from 1 to 200")
    try:
        from gradio_client import Client, handle_file
    except ImportError:
        sys.exit("error: needs gradio_client: pip install 'convscope[web]'")

    proc = None
    log = tempfile.TemporaryFile(mode="w+")  # the started server's output, shown if it fails
    if a.url:
        host = urlparse(a.url).hostname or ""
        if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
            sys.exit("error: --url must be a loopback address (127.0.0.1, localhost, [::1])")
        url = a.url
    else:
        proc, url = start_server(a.concurrency, log)
    try:
        t0 = time.perf_counter()
        wait_up(url, proc)
        started = time.perf_counter() - t0
        with tempfile.TemporaryDirectory(prefix="web-load-") as tmp:
            photo = Path(tmp) / "photo.png"
            img = synthetic_photo(a.size, round(a.size * 0.75))
            img.save(photo)
            clients = [Client(url, verbose=False) for _ in range(a.requests)]
            latencies: list[float] = []
            failures: list[str] = []
            lock = threading.Lock()
            go = threading.Barrier(a.requests + 1)

            def one(client) -> None:
                go.wait()
                start = time.perf_counter()
                try:
                    job = client.submit(method=f"model:{a.style}", content=handle_file(str(photo)),
                                        api_name="/stylize")
                    result, status, _ = job.result(timeout=REQUEST_TIMEOUT)
                    with Image.open(result) as out:
                        size = out.size
                    if size != img.size:
                        raise RuntimeError(f"result is {size[0]}x{size[1]}, not {img.width}x{img.height}")
                    with lock:
                        latencies.append(time.perf_counter() - start)
                except Exception as exc:  # noqa: BLE001 (counted and reported)
                    with lock:
                        failures.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

            threads = [threading.Thread(target=one, args=(c,)) for c in clients]
            for t in threads:
                t.start()
            go.wait()
            wall0 = time.perf_counter()
            for t in threads:
                t.join(REQUEST_TIMEOUT + 30)
            wall = time.perf_counter() - wall0
    except SystemExit:
        if proc is not None:
            log.seek(0)
            print("server output:\n" + log.read()[-3000:], file=sys.stderr)
        raise
    finally:
        if proc is not None:
            stop_server(proc)
        log.close()

    completed = len(latencies)
    row = {"requests": a.requests, "concurrency": a.concurrency if proc is not None else None,
           "content": f"{img.width}x{img.height}", "style": a.style, "completed": completed,
           "failed": len(failures), "p50_s": round(percentile(latencies, 50), 3),
           "p95_s": round(percentile(latencies, 95), 3),
           "max_s": round(max(latencies), 3) if latencies else None,
           "mean_s": round(statistics.fmean(latencies), 3) if latencies else None,
           "wall_s": round(wall, 3), "per_s": round(completed / wall, 2) if wall > 0 else None,
           "server_start_s": round(started, 2)}
    print(f"web load: {a.requests} simultaneous fast stylizations ({a.style}, {img.width}x{img.height}) "
          f"against {url}" + (f" (started here, --concurrency {a.concurrency})" if proc is not None else ""))
    print()
    print(f"{'requests':>8} {'completed':>9} {'failed':>6} {'p50 s':>7} {'p95 s':>7} {'max s':>7} "
          f"{'wall s':>7} {'req/s':>6}")
    print(f"{row['requests']:>8} {row['completed']:>9} {row['failed']:>6} {row['p50_s']:>7.2f} "
          f"{row['p95_s']:>7.2f} {row['max_s'] or float('nan'):>7.2f} {row['wall_s']:>7.2f} "
          f"{row['per_s'] or 0:>6.2f}")
    for f in failures[:5]:
        print(f"  failed: {f}")
    ok = completed == a.requests
    print(f"\n{'PASS' if ok else 'FAIL'}: {completed} of {a.requests} requests completed "
          f"(server ready in {started:.1f} s)")
    finish([row], a.json)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

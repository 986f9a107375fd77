"""`convscope serve [--host 127.0.0.1] [--port 7860] [--runs DIR] ...`: the web UI (needs the `web` extra)."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path

LOOPBACK_HOST = "127.0.0.1"
MAX_UPLOAD_MB = 1_000_000  # --max-upload-mb at most (a terabyte)


def register(subparsers) -> None:
    from ..web.limits import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_MB

    p = subparsers.add_parser(
        "serve", help="start the web UI: stylize, classify, explain, dream, textures, see inside",
        description="Start a local web app (Gradio) with tabs Stylize, Classify, Explain, Dream & textures, "
        "and See inside. It listens on 127.0.0.1 (this computer only) unless --host says otherwise. Needs the "
        "web extra: pip install 'convscope[web]'. Stop it with Ctrl-C.")
    p.add_argument("--host", default=LOOPBACK_HOST, help="address to listen on; 0.0.0.0 lets other machines "
                   "connect (there is no login) (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.add_argument("--runs", default=None, metavar="DIR", help="offer the trained classifier runs found under "
                   "this folder in the Classify, Explain and See inside tabs")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                   help=f"largest upload in MB (default: {DEFAULT_MAX_UPLOAD_MB})")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"largest image in pixels, width x height (default: {DEFAULT_MAX_PIXELS:,})")
    p.add_argument("--concurrency", type=int, default=1, help="jobs that run on the device at once; the rest "
                   "wait in a queue (default: 1)")
    p.add_argument("--device", default="auto", help="device of every job: auto, cpu, cuda, cuda:N, mps "
                   "(default: auto)")
    p.set_defaults(func=run)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int) -> None:
    """ConfigError unless `port` on `host` can be listened on now (checked before the slow start)."""
    from ..errors import ConfigError

    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be from 1 to 65535, not {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ConfigError(f"--host {host!r} is not an address of this machine") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind(address)
        except PermissionError:
            raise ConfigError(f"no permission to listen on port {port}; use a port above 1023") from None
        except OSError as exc:
            if "assign" in str(exc).lower():
                raise ConfigError(f"--host {host} is not an address of this machine") from None
            raise ConfigError(f"port {port} on {host} is in use (another server?); choose another with "
                              "--port") from None


def settings_from(args):
    from ..errors import ConfigError
    from ..web.handlers import Settings
    from ..web.limits import Limits

    # A finite number (inf raised OverflowError; 1e300 made Gradio fail to start with a message
    # about share links): at most a terabyte, far beyond any image.
    if not 0 < args.max_upload_mb <= MAX_UPLOAD_MB:
        raise ConfigError(f"--max-upload-mb must be positive and at most {MAX_UPLOAD_MB:,}, not {args.max_upload_mb}")
    max_bytes = int(args.max_upload_mb * 2**20)
    if max_bytes < 1:  # (Limits said "max bytes must be a positive whole number", a flag serve has not)
        raise ConfigError(f"--max-upload-mb {args.max_upload_mb} is under one byte; give at least 1e-06")
    if args.max_pixels < 1:
        raise ConfigError(f"--max-pixels must be positive, not {args.max_pixels}")
    if not 1 <= args.concurrency <= 64:
        raise ConfigError(f"--concurrency must be from 1 to 64, not {args.concurrency}")
    runs = None
    if args.runs is not None:
        runs = Path(args.runs).expanduser()
        if not runs.is_dir():
            raise ConfigError(f"--runs {runs}: " + ("a file, not a folder of classify runs" if runs.exists()
                                                     else "no such folder"))
    from ..devices import resolve_device

    resolve_device(args.device)  # a bad --device fails now, not in the first job
    import gradio.utils

    limits = Limits(max_bytes=max_bytes, max_pixels=args.max_pixels,
                    upload_root=Path(gradio.utils.get_upload_folder()))
    return Settings(limits=limits, concurrency=args.concurrency, runs=runs, device=args.device)


def launch(demo, host: str, port: int, max_bytes: int) -> None:
    """Serve until Ctrl-C (Gradio's launch blocks, and returns after closing on Ctrl-C)."""
    demo.launch(server_name=host, server_port=port, max_file_size=max_bytes, share=False, quiet=True,
                show_error=False, ssr_mode=False, inbrowser=False)


def run(args) -> int:
    from ..errors import UserError

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine
    try:
        import gradio  # noqa: F401 (only checking that the web extra is installed)
    except ImportError:
        raise UserError("the web UI needs Gradio, which is not installed; install it with: "
                        "pip install 'convscope[web]'") from None
    check_port(args.host, args.port)
    settings = settings_from(args)
    from ..web.app import build_app

    demo = build_app(settings)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown}:{args.port}"
    print(f"convscope serve: {url}  (Ctrl-C stops it)", file=sys.stderr)
    if is_loopback(args.host):
        print("listening on this computer only; --host 0.0.0.0 lets other machines connect", file=sys.stderr)
    else:
        print(f"warning: listening on {args.host}: anyone who can reach this machine on port {args.port} can use "
              "the app and its compute; there is no login", file=sys.stderr)
    # `kill` (SIGTERM) stops it like Ctrl-C (cli.main): Gradio closes and the temp folder is removed.
    try:
        launch(demo, args.host, args.port, settings.limits.max_bytes)
    except KeyboardInterrupt:  # stopped while Gradio was still starting (it handles it once serving)
        demo.close()
    except OSError as exc:
        raise UserError(f"could not listen on {args.host}:{args.port} ({exc})") from None
    finally:
        demo.convscope_handlers.cleanup()
    return 0

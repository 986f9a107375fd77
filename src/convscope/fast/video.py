"""Stylizing videos frame by frame with a feed-forward or an arbitrary-style network.

The frames are decoded by ffmpeg, stylized on the device in batches, and encoded to H.264 at the
source's frame rate, with the source's audio copied next to them (the ffmpeg processes are in
`videoio`). Everything is written to temporary files in the output folder and renamed at the end:
a failed or interrupted run leaves no output behind.

Reducing flicker (`temporal` > 0). Feed-forward networks stylize each frame on its own, so noise
and tiny changes of the input become visible flicker of the brush strokes. Where the content did
not change, each output frame is blended with the previous output frame:

    D_t = | G * (x_t - x_{t-1}) |, averaged over R, G, B     x: input frames in [0, 1]; G: Gaussian blur, 2 px
    w_t = temporal * exp(-D_t^2 / temporal_sigma^2)           per pixel, in [0, temporal]
    y_t = (1 - w_t) * s_t + w_t * y_{t-1}                      s: stylized frame; y: output frame

Blurring the difference first averages sensor and compression noise away, so it does not count as
change. Static regions thus follow an exponential moving average of the stylized frames (memory
about 1 / (1 - temporal) frames); moving regions (D_t well above temporal_sigma) take the fresh
stylized frame, so nothing ghosts. No optical flow: with a moving camera most pixels change, and
the blend does little there.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from .. import images
from ..argcheck import callback_or_none, config_of
from ..errors import ConfigError, OutputError
from .apply import ArbitraryStylizer, FastStylizer
from .config import VIDEO_FORMATS, VideoConfig
from .videoio import Encoder, VideoError, VideoInfo, mux_audio, next_frame, open_frames

BLUR_SIGMA = 2.0  # px, of the Gaussian blur of the frame difference in the temporal blend
SHORT_FRACTION = 0.8  # fewer frames than this part of the expected number: VideoResult.short


@dataclass
class VideoProgress:
    frame: int        # frames done so far (1 .. frames)
    frames: int       # frames expected in all (from duration x fps; 0 when unknown)
    elapsed: float    # seconds since the start


@dataclass
class VideoResult:
    path: Path
    frames: int
    size: tuple[int, int]      # width, height of the written frames
    fps: float
    seconds: float
    audio: str                 # "none" (no source audio), "off", "copied", "aac" (re-encoded), or "dropped: why"
    config: VideoConfig
    expected: int = 0          # frames the source's duration x frame rate promise (up to max_frames); 0: unknown

    @property
    def short(self) -> bool:
        """Far fewer frames than the source promises: a file cut off while it was copied or
        downloaded decodes up to the cut, and ffmpeg ends without an error. (Also true of some
        variable-frame-rate videos, whose nominal rate overstates their frames: hence 80%.)"""
        return self.expected > 0 and self.frames < SHORT_FRACTION * self.expected


# ---- paths -----------------------------------------------------------------------------------
def check_video_output(path) -> Path:
    """Check, before any work, that a video can be written at `path` (.mp4, .mov or .mkv)."""
    p = Path(path).expanduser()
    if p.suffix.lower() not in VIDEO_FORMATS:
        raise OutputError(f"cannot write {p}: unknown video extension {p.suffix!r}; use one of "
                          f"{', '.join(VIDEO_FORMATS)}")
    images.check_output_file(p, "out.mp4")
    if images.sidecar_path(p).is_dir():  # found only once the video was written over any old one
        raise OutputError(f"cannot write {p}: its settings file {images.sidecar_path(p)} would replace a folder; "
                          "move that folder or choose another output name")
    return p


def _readable_video(path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise VideoError(f"video file not found: {p}")
    if not p.is_file():
        raise VideoError(f"{p} is not a file; give a video file")
    if p.stat().st_size == 0:
        raise VideoError(f"{p} is empty (0 bytes); give a video file")
    return p.resolve()  # absolute: a name like '-x.mp4' must never read as an ffmpeg option


def _temp_path(folder: Path, name: str) -> Path:
    """A new empty file beside the output, to be renamed over it (mode from the umask, like any file)."""
    for _ in range(100):
        p = folder / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return p
        except FileExistsError:
            continue
    raise OutputError(f"could not create a temporary file in {folder}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # the data is on disk before the name points to it
    finally:
        os.close(fd)


# ---- reading ---------------------------------------------------------------------------------
def probe(path) -> VideoInfo:
    """Size, frame rate, duration and audio of a video, without decoding its frames."""
    p = _readable_video(path)
    info, gen = open_frames(p, None)
    gen.close()
    return info


def _scaled_size(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(w, h) with the long side `long_side`, both even (yuv420p needs even sizes), aspect kept."""
    w, h = size
    scale = long_side / max(w, h)
    even = lambda v: max(2, int(round(v / 2)) * 2)  # noqa: E731
    return even(w * scale), even(h * scale)


# ---- the temporal blend ----------------------------------------------------------------------
def _gaussian_kernel(sigma: float, device) -> torch.Tensor:
    radius = max(1, math.ceil(2 * sigma))
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    k = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return k / k.sum()


def _blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of [N, C, H, W], edges reflected (replicated on tiny frames)."""
    r = kernel.numel() // 2
    n, c, h, w = x.shape
    mode = "reflect" if min(h, w) > r else "replicate"
    y = x.reshape(n * c, 1, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode=mode), kernel.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode=mode), kernel.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


def temporal_weights(inputs: torch.Tensor, previous: torch.Tensor, strength: float, sigma: float,
                     kernel: torch.Tensor) -> torch.Tensor:
    """w_t of the module docstring for frames `inputs` [N, 3, H, W] whose predecessors are
    `previous` [N, 3, H, W] (all in [0, 1]) -> [N, 1, H, W] in [0, strength]."""
    d = _blur(inputs - previous, kernel).abs().mean(dim=1, keepdim=True)
    return strength * torch.exp(-(d / sigma) ** 2)


# ---- the engine ------------------------------------------------------------------------------
def _auto_batch(device: torch.device, size: tuple[int, int]) -> int:
    if device.type == "cpu":
        return 1  # measured on CPU (TransformerNet, 320x180 and 640x360): batches were no faster
    return max(1, min(4, 2 ** 20 // (size[0] * size[1])))


def _frame_fn(stylizer, styles: Sequence[Image.Image] | None, weights: Sequence[float] | None) -> Callable:
    if isinstance(stylizer, ArbitraryStylizer):
        if not styles:
            raise ConfigError("the arbitrary method needs at least one style image")
        return lambda x: stylizer.tensor(x, styles, weights)
    if styles:
        raise ConfigError("a feed-forward model takes no style images (use the arbitrary method for them)")
    return stylizer.tensor


def stylize_video(source, output, stylizer: FastStylizer | ArbitraryStylizer, config: VideoConfig | None = None,
                  styles: Sequence[Image.Image] | None = None, weights: Sequence[float] | None = None,
                  callback: Callable[[VideoProgress], None] | None = None,
                  comment: str | None = None) -> VideoResult:
    """Stylize every frame of the video `source` and write the video `output` (.mp4/.mov/.mkv).

    `stylizer` is a FastStylizer, or an ArbitraryStylizer with `styles` (blended by `weights`).
    `callback` gets a VideoProgress after each frame; `comment` (e.g. the run's JSON) is stored in
    the container's comment tag. Odd frame sizes are padded by one repeated row/column to even
    (H.264 in yuv420p cannot hold odd sizes). Returns a VideoResult; VideoError for a bad video.
    """
    config = config_of(VideoConfig() if config is None else config, VideoConfig).validate()
    for name, path in (("source", source), ("output", output)):
        if not isinstance(path, (str, os.PathLike)):
            raise ConfigError(f"{name} must be the path of a video file, not {type(path).__name__}")
    if not isinstance(stylizer, (FastStylizer, ArbitraryStylizer)):
        raise ConfigError(f"stylizer must be a FastStylizer or an ArbitraryStylizer, not {type(stylizer).__name__}")
    callback_or_none(callback, "VideoProgress")
    if comment is not None and not isinstance(comment, str):
        raise ConfigError(f"comment must be a string (or None), not {type(comment).__name__}")
    src = _readable_video(source)
    out = check_video_output(output)
    if out.exists() and out.resolve() == src:
        raise ConfigError(f"-o {out} is the input video; write to another file")
    fn = _frame_fn(stylizer, styles, weights)
    start = time.perf_counter()

    info = probe(src)
    scale = _scaled_size(info.size, config.size) if config.size else None
    # Decoded at the rate they are encoded at: ffmpeg's raw frames otherwise come at the stream's
    # base rate, and a variable-frame-rate video (phones record them) came out longer than its
    # source, the audio drifting. Constant-rate sources pass through unchanged.
    info, frames = open_frames(src, scale if scale != info.size else None, info.fps)
    try:
        return _run(src, out, info, frames, fn, stylizer, config, callback, comment, start)
    finally:
        frames.close()  # stops the decoding ffmpeg (a no-op when it has finished)


def _run(src: Path, out: Path, info: VideoInfo, frames, fn: Callable, stylizer, config: VideoConfig,
         callback, comment: str | None, start: float) -> VideoResult:
    """The decode -> stylize -> encode -> mux loop of stylize_video."""
    muxer = VIDEO_FORMATS[out.suffix.lower()]
    w, h = info.size
    out_size = (w + w % 2, h + h % 2)
    fps = info.fps or Fraction(25)  # unknown rate (rare: raw streams): ffmpeg's own default
    expected = info.frames
    if config.max_frames:
        expected = min(expected, config.max_frames) if expected else config.max_frames
    device = stylizer.device
    batch = config.batch or _auto_batch(device, info.size)
    if isinstance(stylizer, ArbitraryStylizer) and stylizer.config.preserve_color == "histogram":
        batch = 1  # the style is matched to each frame's colours: one frame at a time
    kernel = _gaussian_kernel(BLUR_SIGMA, device)

    temps = [_temp_path(out.parent, out.name)]
    encoder = None
    try:
        encoder = Encoder(temps[0], muxer, out_size, fps, config, comment)
        done, prev_in, prev_out = 0, None, None
        pending: list[np.ndarray] = []

        def flush() -> None:
            nonlocal done, prev_in, prev_out
            with torch.inference_mode():
                x = torch.from_numpy(np.stack(pending)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
                y = fn(x).float().clamp_(0.0, 1.0)
                if config.temporal > 0:
                    before = torch.cat([x[:1] if prev_in is None else prev_in, x[:-1]])
                    wts = temporal_weights(x, before, config.temporal, config.temporal_sigma, kernel)
                    rows = []
                    for i in range(len(y)):  # y_t depends on y_{t-1}: a short sequential pass
                        prev_out = y[i:i + 1] if prev_out is None else torch.lerp(y[i:i + 1], prev_out, wts[i:i + 1])
                        rows.append(prev_out)
                    y = torch.cat(rows)
                    prev_in = x[-1:]
                frames_u8 = y.mul_(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            pending.clear()
            for frame in frames_u8:
                if out_size != (w, h):
                    frame = np.pad(frame, ((0, out_size[1] - h), (0, out_size[0] - w), (0, 0)), mode="edge")
                encoder.write(np.ascontiguousarray(frame))
                done += 1
                if callback is not None:
                    callback(VideoProgress(done, max(expected, done), time.perf_counter() - start))

        while not config.max_frames or done + len(pending) < config.max_frames:
            raw = next_frame(frames, src, done + len(pending))
            if raw is None:
                break
            pending.append(np.frombuffer(raw, np.uint8).reshape(h, w, 3))
            if len(pending) == batch:
                flush()
        frames.close()  # done reading (--max-frames stops ffmpeg early)
        if pending:
            flush()
        if done == 0:
            raise VideoError(f"{src} has no video frames that ffmpeg can decode")
        encoder.finish()

        audio = "off" if not config.audio else "none" if info.audio_codec is None else ""
        final = temps[0]
        if not audio:
            temps.append(_temp_path(out.parent, out.name))
            audio = mux_audio(temps[0], src, temps[1], muxer, info.audio_codec, comment)
            if not audio.startswith("dropped"):
                final = temps[1]
        _fsync(final)
        os.replace(final, out)
        temps.remove(final)
    except OSError as exc:
        raise OutputError(f"could not write {out} ({exc.strerror or exc}); check free space and "
                          "permissions") from None
    finally:
        if encoder is not None:
            encoder.close()  # kills ffmpeg if it still runs (an error or Ctrl-C)
        for t in temps:
            with contextlib.suppress(OSError):
                t.unlink()
    promised = min(info.frames, config.max_frames or info.frames)  # 0 when the source's length is unknown
    return VideoResult(out, done, out_size, float(fps), time.perf_counter() - start, audio, config, promised)


def run_comment(metadata: dict) -> str:
    """The run's metadata as compact JSON for the container's comment tag."""
    return json.dumps(metadata, separators=(",", ":"), default=str)

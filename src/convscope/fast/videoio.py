"""Video in and out through the ffmpeg binary that the `imageio-ffmpeg` wheel ships.

Frames are decoded from any format ffmpeg reads to rgb24 (`open_frames`, `next_frame`) and piped
to a second ffmpeg that encodes H.264 (libx264, yuv420p, BT.709; `Encoder`). A third, short ffmpeg
call copies the source's audio tracks next to the new video (`mux_audio`, re-encoding them to AAC
only when the container cannot hold them as they are). ffmpeg's failures become one-line
VideoErrors naming the line of its log that says what went wrong.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UserError

if TYPE_CHECKING:
    from .video import VideoConfig

# Audio codecs that players handle inside MP4; others are re-encoded to AAC there.
MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac", "opus"}
# Codecs of still images, which ffmpeg happily reads as a one-frame "video".
STILL_CODECS = {"png", "mjpeg", "webp", "bmp", "tiff", "gif", "jpeg2000", "jpegls", "jpegxl", "qoi", "ppm",
                "pgm", "pam", "sgi", "targa", "dds"}
# Frame rates written as decimals in ffmpeg's log that are really NTSC fractions.
NTSC_RATES = {23.98: Fraction(24000, 1001), 29.97: Fraction(30000, 1001), 47.95: Fraction(48000, 1001),
              59.94: Fraction(60000, 1001), 119.88: Fraction(120000, 1001)}


class VideoError(UserError):
    """A video that cannot be read: missing, not a video, damaged, or without frames."""


@dataclass
class VideoInfo:
    """What ffmpeg says about a video before decoding it."""
    size: tuple[int, int]      # width, height of the decoded frames (rotation applied)
    fps: Fraction              # 0 when unknown
    duration: float            # seconds; 0 when unknown
    codec: str
    audio_codec: str | None    # None: no audio track

    @property
    def frames(self) -> int:
        """Expected number of frames (0 when unknown); a hint for progress, not exact."""
        return round(self.duration * self.fps) if self.duration > 0 and self.fps > 0 else 0


# ---- reading ---------------------------------------------------------------------------------
def _ffmpeg_reason(text: str) -> str:
    """The line of an ffmpeg log that says what went wrong, without the '[in#0 @ 0x...]' prefix."""
    lines = [re.sub(r"^\[[^\]]*\]\s*", "", ln).strip() for ln in str(text).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(("===", "libav", "libsw", "libpostproc", "configuration:",
                                                            "built with", "ffmpeg version"))]
    for pattern in ("Error opening input:", "Invalid data", "No such file", "Permission denied",
                    "does not contain any stream", "Error"):
        for ln in reversed(lines):
            if pattern in ln:
                return ln.split("Error opening input:", 1)[-1].strip().rstrip(".")
    return lines[-1].rstrip(".") if lines else "ffmpeg could not read it"


def open_frames(path: Path, scale: tuple[int, int] | None, fps: Fraction = Fraction(0)):
    """(VideoInfo, generator of rgb24 frame bytes) from imageio-ffmpeg, errors as VideoError.

    `scale`: (w, h) to resize the frames to as they are decoded. `fps` > 0: the frames at exactly
    that constant rate, repeated or dropped by their timestamps (for a variable-frame-rate video,
    whose raw frames would otherwise come at the stream's base rate, not the rate it reports)."""
    import imageio_ffmpeg

    output = ["-vf", f"scale={scale[0]}:{scale[1]}:flags=lanczos"] if scale else []
    if fps > 0:
        output += ["-r", str(fps)]
    gen = imageio_ffmpeg.read_frames(str(path), output_params=output)
    try:
        with _quiet_imageio():  # it warns that the frames we asked to be scaled are scaled
            meta = next(gen)
    except StopIteration:
        raise VideoError(f"{path} has no video frames") from None
    except Exception as exc:  # OSError with ffmpeg's log; parsing errors on odd streams
        gen.close()
        text = str(exc)
        if "Input #0" in text and " Video: " not in text:
            raise VideoError(f"{path} has no video stream (an audio file?); give a video file") from None
        raise VideoError(f"cannot read {path} as a video ({_ffmpeg_reason(text)}); is it a complete, "
                         "undamaged video file?") from None
    codec = str(meta.get("codec", "")).strip(" ,")
    audio = meta.get("audio_codec")
    info = VideoInfo(tuple(meta["size"]), _fps(meta.get("fps", 0)), float(meta.get("duration") or 0.0),
                     codec, str(audio).strip(" ,") if audio is not None else None)
    # A picture with no frame rate beside a duration is an audio file's cover art (its one frame
    # would make a 0.04 s video that cuts the audio short).
    if codec in STILL_CODECS and (info.duration == 0 or info.fps == 0):
        gen.close()
        if info.audio_codec is not None:
            raise VideoError(f"{path} has no video stream, only a still picture ({codec}: an audio file's "
                             "cover art?); give a video file")
        raise VideoError(f"{path} is a still image ({codec}), not a video; use convscope stylize for images")
    return info, gen


@contextlib.contextmanager
def _quiet_imageio():
    log = logging.getLogger("imageio_ffmpeg")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _fps(value) -> Fraction:
    value = float(value or 0)
    if value <= 0 or not math.isfinite(value):
        return Fraction(0)
    return NTSC_RATES.get(round(value, 2), Fraction(value).limit_denominator(1001))


def next_frame(frames, path: Path, index: int) -> bytes | None:
    try:
        return next(frames)
    except StopIteration:
        return None
    except RuntimeError as exc:  # imageio-ffmpeg: the stream ended inside a frame, or ffmpeg failed
        raise VideoError(f"cannot read {path} past frame {index} ({_ffmpeg_reason(str(exc))})") from None


# ---- writing ---------------------------------------------------------------------------------
class Encoder:
    """rgb24 frames in, H.264 (yuv420p, BT.709) out, through an ffmpeg process.

    Our own small pipe rather than imageio_ffmpeg.write_frames: that one ignores ffmpeg's exit
    status (a failed encode would go unnoticed) and lets ffmpeg print to the terminal."""

    def __init__(self, path: Path, muxer: str, size: tuple[int, int], fps: Fraction, config: VideoConfig,
                 comment: str | None):
        import imageio_ffmpeg

        w, h = size
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-framerate", str(fps), "-i", "-",
               "-an", "-c:v", "libx264", "-preset", config.preset, "-crf", str(config.crf),
               # RGB -> YUV with the HD matrix, and say so in the stream, so players convert back
               # with the same one (untagged, they guess, and colours shift).
               "-vf", "scale=out_color_matrix=bt709:out_range=tv", "-pix_fmt", "yuv420p",
               "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]
        cmd += _container_options(muxer, comment) + [str(path)]
        self.log = tempfile.TemporaryFile()  # a file, not a pipe: a full pipe would stall ffmpeg
        self.process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.log,
                                        start_new_session=True)  # Ctrl-C reaches us, not ffmpeg
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        try:
            self.process.stdin.write(frame.tobytes())
        except (BrokenPipeError, OSError):
            self.process.wait()
            raise VideoError(f"ffmpeg stopped encoding at frame {self.frames + 1} ({self._reason()})") from None
        self.frames += 1

    def finish(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.process.stdin.close()
        if self.process.wait() != 0:
            raise VideoError(f"ffmpeg could not encode the video ({self._reason()})")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        self.log.close()

    def _reason(self) -> str:
        self.log.seek(0)
        return _ffmpeg_reason(self.log.read().decode("utf-8", "replace"))


def _container_options(muxer: str, comment: str | None) -> list[str]:
    options = ["-movflags", "+faststart"] if muxer in ("mp4", "mov") else []  # playable while downloading
    if comment:
        options += ["-metadata", f"comment={comment}"]
    return options + ["-f", muxer]


def mux_audio(video: Path, source: Path, out: Path, muxer: str, audio_codec: str, comment: str | None) -> str:
    """Write `out` = the video of `video` + the audio tracks of `source`, copied (or AAC where the
    container cannot hold them). Returns "copied" or "aac"; "dropped: why" if neither works."""
    import imageio_ffmpeg

    reason = ""
    tries = [("copied", ["-c:a", "copy"]), ("aac", ["-c:a", "aac", "-b:a", "192k"])]
    if muxer == "mp4" and audio_codec not in MP4_AUDIO:
        tries = tries[1:]  # MP4 can store e.g. PCM, but few players play it there
    for audio, codec in tries:
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
               "-i", str(video), "-i", str(source), "-map", "0:v:0", "-map", "1:a?", "-c:v", "copy", *codec,
               "-shortest", *_container_options(muxer, comment), str(out)]
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
        if done.returncode == 0:
            return audio
        reason = _ffmpeg_reason(done.stderr.decode("utf-8", "replace"))
    return f"dropped: {reason}"

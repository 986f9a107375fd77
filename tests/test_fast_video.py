"""Tests of `convscope stylize-video` and its engine, convscope.fast.video.

Every video is made here (a few dozen frames of 66x50 with moving shapes, encoded losslessly with
the ffmpeg binary of imageio-ffmpeg), and so is every model (tiny, untrained). Outputs go to
tmp_path/out, so "nothing was left behind" is a check of the whole folder.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import wave
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch

from convscope.cli import main
from convscope.errors import ConfigError
from convscope.fast import video
from convscope.fast.apply import FastConfig, FastStylizer
from convscope.fast.models import ARBITRARY_KIND, STYLE_KIND, save_model
from convscope.fast.nets import Decoder, TransformerNet

W, H, FPS = 66, 50, 24
CPU = ["--device", "cpu", "--precision", "fp32", "--preset", "ultrafast", "-q"]


# ---- making inputs ---------------------------------------------------------------------------
def moving_frames(n: int = 24, w: int = W, h: int = H) -> list[np.ndarray]:
    """A gradient background with a square moving right and a bar moving down."""
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for t in range(n):
        f = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1), np.full_like(xx, 90)], -1)
        f = f.astype(np.uint8)
        x0 = (2 * t) % max(1, w - 12)
        f[10:22, x0:x0 + 12] = (250, 240, 20)
        y0 = t % max(1, h - 5)
        f[y0:y0 + 5, w // 2:w // 2 + 20] = (20, 30, 200)
        frames.append(f)
    return frames


def write_video(path: Path, frames: list[np.ndarray], fps: int = FPS) -> Path:
    """Frames -> H.264 (quality 10: crf 0, lossless), no resizing; odd sizes in yuv444p."""
    h, w = frames[0].shape[:2]
    gen = imageio_ffmpeg.write_frames(str(path), (w, h), fps=fps, quality=10, macro_block_size=1,
                                      pix_fmt_out="yuv444p" if w % 2 or h % 2 else "yuv420p",
                                      ffmpeg_log_level="error")
    gen.send(None)
    for f in frames:
        gen.send(np.ascontiguousarray(f))
    gen.close()
    return path


def sine_wav(path: Path, seconds: float = 1.0, rate: int = 8000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                               for i in range(int(seconds * rate))))
    return path


def mux(video_path: Path, wav: Path, out: Path, audio_codec: str) -> Path:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-i", str(video_path),
                    "-i", str(wav), "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", audio_codec,
                    str(out)], check=True, stdin=subprocess.DEVNULL)
    return out


def read_video(path: Path) -> tuple[dict, np.ndarray]:
    """(imageio-ffmpeg's metadata, frames [T, H, W, 3] uint8)."""
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    w, h = meta["size"]
    frames = np.stack([np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in gen])
    if "audio_codec" in meta:
        meta["audio_codec"] = meta["audio_codec"].strip(" ,")  # 'pcm_s16le,' as the log has it
    return meta, frames


# ---- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("assets")
    torch.manual_seed(0)
    model = save_model(d / "tiny.safetensors", STYLE_KIND, TransformerNet((4, 8, 8), 1), {"card": {}})
    decoder = save_model(d / "decoder.safetensors", ARBITRARY_KIND, Decoder((8, 8, 8)), {"card": {}})
    clip = write_video(d / "clip.mp4", moving_frames())
    wav = sine_wav(d / "tone.wav")
    return {"model": model, "decoder": decoder, "clip": clip,
            "with_aac": mux(clip, wav, d / "with_aac.mp4", "aac"),
            "with_pcm": mux(clip, wav, d / "with_pcm.mkv", "pcm_s16le"), "wav": wav}


@pytest.fixture
def out_dir(tmp_path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---- the command -----------------------------------------------------------------------------
def test_feed_forward_writes_h264_with_same_frames_size_and_rate(assets, out_dir, capsys):
    out = out_dir / "styled.mp4"
    rc = main(["stylize-video", str(assets["clip"]), "--model", str(assets["model"]), "-o", str(out),
               *CPU[:-1]])  # not quiet: the summary line
    assert rc == 0
    meta, frames = read_video(out)
    assert frames.shape == (24, H, W, 3)
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p") and meta["fps"] == FPS
    assert "audio_codec" not in meta
    # stylized, not the source passed through
    _, source = read_video(assets["clip"])
    assert np.abs(frames.astype(float) - source).mean() > 10
    side = json.loads((out_dir / "styled.json").read_text())
    assert side["command"] == "stylize-video" and side["frames"] == 24 and side["size"] == [W, H]
    assert side["config"]["video"]["temporal"] == 0.0 and side["audio"] == "none"
    assert side["config"]["stylize"]["device"] == "cpu" and "alpha" not in side["config"]["stylize"]
    assert leftovers(out_dir) == ["styled.json", "styled.mp4"]
    assert "wrote" in capsys.readouterr().err


def test_max_frames_and_size(assets, out_dir):
    out = out_dir / "short.mkv"
    assert main(["stylize-video", str(assets["clip"]), "--model", str(assets["model"]), "-o", str(out),
                 "--max-frames", "5", "--size", "32", *CPU]) == 0
    meta, frames = read_video(out)
    assert frames.shape == (5, 24, 32, 3)  # 66x50 -> long side 32, short side even: 32x24


def test_odd_frame_size_is_padded_to_even(assets, tmp_path, out_dir):
    src = write_video(tmp_path / "odd.mp4", [f[:49, :65] for f in moving_frames(6)])
    out = out_dir / "odd.mp4"
    assert main(["stylize-video", str(src), "--model", str(assets["model"]), "-o", str(out), *CPU]) == 0
    _, frames = read_video(out)
    assert frames.shape == (6, 50, 66, 3)  # yuv420p needs even sizes: one repeated row and column
    assert np.abs(frames[:, -1].astype(int) - frames[:, -2]).mean() < 6
    assert np.abs(frames[:, :, -1].astype(int) - frames[:, :, -2]).mean() < 6


def test_audio_is_copied(assets, out_dir):
    out = out_dir / "sound.mp4"
    assert main(["stylize-video", str(assets["with_aac"]), "--model", str(assets["model"]), "-o", str(out),
                 *CPU]) == 0
    meta, frames = read_video(out)
    assert meta.get("audio_codec") == "aac" and len(frames) == 24
    assert json.loads(out.with_suffix(".json").read_text())["audio"] == "copied"
    assert leftovers(out_dir) == ["sound.json", "sound.mp4"]


def test_pcm_audio_is_reencoded_for_mp4_and_no_audio_drops_it(assets, out_dir):
    stylizer = FastStylizer(str(assets["model"]), FastConfig(device="cpu", precision="fp32"))
    config = video.VideoConfig(preset="ultrafast", max_frames=6)
    result = video.stylize_video(assets["with_pcm"], out_dir / "a.mp4", stylizer, config)
    assert result.audio == "aac" and read_video(out_dir / "a.mp4")[0].get("audio_codec") == "aac"
    result = video.stylize_video(assets["with_pcm"], out_dir / "b.mkv", stylizer, config)
    assert result.audio == "copied" and read_video(out_dir / "b.mkv")[0].get("audio_codec") == "pcm_s16le"
    config.audio = False
    result = video.stylize_video(assets["with_pcm"], out_dir / "c.mp4", stylizer, config)
    assert result.audio == "off" and "audio_codec" not in read_video(out_dir / "c.mp4")[0]


def test_arbitrary_with_decoder_file(assets, tmp_path, out_dir):
    from PIL import Image

    style = tmp_path / "style.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(style)
    out = out_dir / "arb.mp4"
    assert main(["stylize-video", str(assets["clip"]), "--method", "arbitrary", "--style", str(style), str(style),
                 "--style-blend", "1", "3", "--decoder", str(assets["decoder"]), "--style-size", "32",
                 "--max-frames", "4", "-o", str(out), *CPU]) == 0
    assert read_video(out)[1].shape == (4, H, W, 3)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["config"]["method"] == "arbitrary" and side["inputs"]["style_blend"] == [1.0, 3.0]
    assert side["config"]["stylize"]["style_size"] == 32 and "strength" not in side["config"]["stylize"]


def flicker(frames: np.ndarray) -> float:
    """Mean absolute change between consecutive frames, in 0..255 levels."""
    f = frames.astype(np.float64)
    return float(np.abs(f[1:] - f[:-1]).mean())


def test_temporal_blend_reduces_flicker_on_a_static_scene(assets, tmp_path, out_dir):
    rng = np.random.default_rng(0)
    still = moving_frames(1)[0].astype(np.int16)
    noisy = [np.clip(still + rng.normal(0, 6, still.shape), 0, 255).astype(np.uint8) for _ in range(10)]
    src = write_video(tmp_path / "static.mp4", noisy)
    runs = {}
    for temporal in ("0", "0.9"):
        out = out_dir / f"t{temporal}.mp4"
        assert main(["stylize-video", str(src), "--model", str(assets["model"]), "-o", str(out),
                     "--temporal", temporal, "--crf", "0", *CPU]) == 0
        runs[temporal] = read_video(out)[1]
    assert flicker(runs["0"]) > 0.5  # the untrained net does pass the noise on
    assert flicker(runs["0.9"]) < 0.5 * flicker(runs["0"])
    # the first frame has nothing to blend with
    assert np.abs(runs["0.9"][0].astype(int) - runs["0"][0]).max() <= 1


def test_batches_give_the_frames_one_at_a_time_gives(assets, out_dir):
    """Batches of 3 over 7 frames (3 + 3 + 1), temporal blend on: the blend must carry over
    batch boundaries exactly as frame by frame."""
    stylizer = FastStylizer(str(assets["model"]), FastConfig(device="cpu", precision="fp32"))
    outs = {}
    for batch in (1, 3):
        config = video.VideoConfig(batch=batch, temporal=0.9, max_frames=7, crf=0, preset="ultrafast")
        result = video.stylize_video(assets["clip"], out_dir / f"b{batch}.mp4", stylizer, config)
        assert result.frames == 7
        outs[batch] = read_video(out_dir / f"b{batch}.mp4")[1].astype(int)
    assert np.abs(outs[1] - outs[3]).max() <= 1


def test_temporal_blend_leaves_moving_content_alone():
    kernel = video._gaussian_kernel(video.BLUR_SIGMA, "cpu")
    a = torch.zeros(1, 3, 32, 32)
    b = a.clone()
    b[..., 8:20, 8:20] = 1.0  # a bright square appears
    w = video.temporal_weights(b, a, 0.8, 0.04, kernel)
    assert w.shape == (1, 1, 32, 32)
    assert w[0, 0, 14, 14] < 0.01 and w[0, 0, 30, 30] == pytest.approx(0.8)


# ---- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["garbage", "truncated", "image", "audio", "cover_art", "empty", "missing"])
def test_bad_video_is_a_one_line_error_and_writes_nothing(kind, assets, tmp_path, out_dir, capsys):
    from PIL import Image

    bad = tmp_path / f"bad_{kind}.mp4"
    if kind == "garbage":
        bad.write_bytes(b"not a video at all " * 200)
    elif kind == "truncated":
        data = assets["clip"].read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "image":
        bad = tmp_path / "picture.png"
        Image.new("RGB", (20, 10), "red").save(bad)
    elif kind == "audio":
        bad = assets["wav"]
    elif kind == "cover_art":  # a song with its album cover: one still frame, no frame rate
        Image.new("RGB", (20, 10), "red").save(tmp_path / "cover.png")
        bad = tmp_path / "song.m4a"
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-i", str(assets["wav"]),
                        "-i", str(tmp_path / "cover.png"), "-map", "0:a", "-map", "1:v", "-c:a", "aac", "-c:v",
                        "mjpeg", "-disposition:v", "attached_pic", str(bad)], check=True, stdin=subprocess.DEVNULL)
    elif kind == "empty":
        bad.write_bytes(b"")
    out = out_dir / "out.mp4"
    rc = main(["stylize-video", str(bad), "--model", str(assets["model"]), "-o", str(out), *CPU])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("convscope: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert leftovers(out_dir) == []
    if kind == "cover_art":
        assert "cover art" in err


def test_wrong_model_kind_and_bad_options(assets, out_dir, capsys):
    clip, out = str(assets["clip"]), str(out_dir / "out.mp4")
    assert main(["stylize-video", clip, "--model", str(assets["decoder"]), "-o", out, *CPU]) == 2
    assert "arbitrary" in capsys.readouterr().err  # says what the file is and what to use it with
    assert main(["stylize-video", clip, "--model", str(assets["model"]), "-o", str(out_dir / "x.avi"), *CPU]) == 2
    assert ".mp4" in capsys.readouterr().err
    assert main(["stylize-video", clip, "-o", out, *CPU]) == 2  # no --model
    assert main(["stylize-video", clip, "--method", "arbitrary", "-o", out, *CPU]) == 2  # no --style
    assert main(["stylize-video", clip, "--model", str(assets["model"]), "--temporal", "2", "-o", out, *CPU]) == 2
    capsys.readouterr()
    # --temporal-sigma without --temporal blended nothing: ignored with exit 0 before
    assert main(["stylize-video", clip, "--model", str(assets["model"]), "--temporal-sigma", "0.1", "-o", out, *CPU]) == 2
    err = capsys.readouterr().err
    assert "--temporal-sigma" in err and "--temporal T" in err and err.count("\n") == 1
    assert main(["stylize-video", clip, "--model", str(assets["model"]), "-o", clip, *CPU]) == 2  # own input
    assert leftovers(out_dir) == []


def test_a_folder_where_the_sidecar_goes_is_refused_before_the_video_is_written(assets, out_dir, capsys):
    # The video was written (over an old one) before the .json sidecar failed: exit 2, output lost.
    (out_dir / "out.json").mkdir()
    (out_dir / "out.mp4").write_bytes(b"the old video")
    rc = main(["stylize-video", str(assets["clip"]), "--model", str(assets["model"]), "-o",
               str(out_dir / "out.mp4"), *CPU])
    err = capsys.readouterr().err
    assert rc == 2 and "out.json" in err and "folder" in err and err.count("\n") == 1
    assert (out_dir / "out.mp4").read_bytes() == b"the old video"
    assert leftovers(out_dir) == ["out.json", "out.mp4"]


@pytest.mark.parametrize("extra", [["--model", "M", "--alpha", "0.5"], ["--model", "M", "--style-size", "256"],
                                   ["--model", "M", "--decoder", "adain"],
                                   ["--method", "arbitrary", "--style", "S", "--strength", "0.5"]])
def test_an_option_of_the_other_method_is_an_error_not_ignored(extra, assets, out_dir, capsys):
    # As in `stylize`: --alpha with --model would otherwise be silently ignored.
    paths = {"M": str(assets["model"]), "S": str(assets["clip"])}
    argv = [paths.get(a, a) for a in extra]
    out = out_dir / "out.mp4"
    assert main(["stylize-video", str(assets["clip"]), *argv, "-o", str(out), *CPU]) == 2
    err = capsys.readouterr().err
    assert "applies to" in err and err.count("\n") == 1
    assert leftovers(out_dir) == []


def test_ctrl_c_leaves_nothing_behind(assets, out_dir, monkeypatch, capsys):
    calls = []
    real = FastStylizer.tensor

    def pressed(self, x):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, x)

    monkeypatch.setattr(FastStylizer, "tensor", pressed)
    rc = main(["stylize-video", str(assets["with_aac"]), "--model", str(assets["model"]), "-o",
               str(out_dir / "out.mp4"), *CPU])
    assert rc == 130 and "nothing written" in capsys.readouterr().err
    assert leftovers(out_dir) == []


def test_probe_reports_size_rate_and_audio(assets):
    info = video.probe(assets["with_aac"])
    assert info.size == (W, H) and info.fps == FPS and info.audio_codec == "aac"
    assert abs(info.frames - 24) <= 1
    assert video.probe(assets["clip"]).audio_codec is None


def test_a_video_cut_off_mid_stream_is_stylized_with_a_warning(assets, tmp_path, out_dir, capsys):
    # With its index at the front (+faststart, as web videos are), a file cut off while it was
    # copied still opens; ffmpeg decodes up to the cut and ends without an error. The run keeps
    # what was decoded, and says the file looks damaged instead of passing it off as complete.
    faststart = tmp_path / "faststart.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-i", str(assets["clip"]),
                    "-c", "copy", "-movflags", "+faststart", str(faststart)], check=True, stdin=subprocess.DEVNULL)
    data = faststart.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    out = out_dir / "out.mp4"
    rc = main(["stylize-video", str(cut), "--model", str(assets["model"]), "-o", str(out), *CPU])
    err = capsys.readouterr().err
    assert rc == 0
    _, frames = read_video(out)
    assert 1 <= len(frames) < 20
    assert err.startswith("warning:") and err.count("\n") == 1 and "cut off or damaged" in err
    assert "about 24" in err  # 24 frames at 24 fps in the source


def test_a_complete_video_gives_no_truncation_warning(assets, out_dir, capsys):
    rc = main(["stylize-video", str(assets["with_aac"]), "--model", str(assets["model"]), "-o",
               str(out_dir / "out.mp4"), "--max-frames", "5", *CPU])
    assert rc == 0 and capsys.readouterr().err == ""


@pytest.mark.parametrize("blend, message", [(["0", "0"], "weights must be 0 or more and not all 0"),
                                            (["1", "-1"], "weights must be 0 or more and not all 0"),
                                            (["1"], "has 1 weight(s) for 2 style image(s)")])
def test_bad_style_blend_is_refused_before_the_model_loads(blend, message, assets, out_dir, capsys, monkeypatch):
    # --style-blend 0 0 was refused only once the decoder had loaded.
    from convscope.fast import apply

    def no_loading(*args, **kwargs):
        raise AssertionError("the model loaded before the refusal")

    monkeypatch.setattr(apply.ArbitraryStylizer, "__init__", no_loading)
    style = str(assets["clip"])
    out = out_dir / "out.mp4"
    assert main(["stylize-video", str(assets["clip"]), "--method", "arbitrary", "--style", style, style,
                 "--style-blend", *blend, "-o", str(out), *CPU]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert leftovers(out_dir) == []


def test_variable_frame_rate_video_keeps_its_duration(assets, tmp_path, out_dir):
    # 30 frames: 10 at 30 fps, 10 at 10 fps, 10 at 30 fps -> 1.67 s, reported as 18 fps (the
    # average). Raw frames came at the base rate (30), encoded at 18: 2.8 s, the audio drifting.
    src = tmp_path / "vfr.mp4"
    pts = "if(lt(N,10),N/30,if(lt(N,20),1/3+(N-10)/10,4/3+(N-20)/30))/TB"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=32x24:rate=30:duration=1", "-vf", f"setpts='{pts}'", "-fps_mode", "vfr",
                    "-frames:v", "30", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(src)],
                   check=True, stdin=subprocess.DEVNULL)
    source = video.probe(src)
    assert source.fps == 18 and abs(source.duration - 5 / 3) < 0.05
    out = out_dir / "vfr.mp4"
    assert main(["stylize-video", str(src), "--model", str(assets["model"]), "-o", str(out), *CPU]) == 0
    meta, frames = read_video(out)
    assert meta["fps"] == 18
    assert abs(len(frames) / 18 - source.duration) <= 3 / 18  # same length, to the rate conversion's ends


def test_kill_sigterm_is_handled_like_ctrl_c(assets, out_dir):
    # `kill PID` (also `timeout`, systemd, docker stop): Python died on the spot, leaving the hidden
    # temp file and an encoding ffmpeg behind. Now: the same cleanup as Ctrl-C, exit 130.
    script = f"""
import os, signal, sys
from convscope.cli import main
from convscope.errors import ConfigError
from convscope.fast.apply import FastStylizer
real, calls = FastStylizer.tensor, []
def killed(self, x):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGTERM)
    return real(self, x)
FastStylizer.tensor = killed
sys.exit(main(["stylize-video", {str(assets["with_aac"])!r}, "--model", {str(assets["model"])!r},
               "-o", {str(out_dir / "out.mp4")!r}, *{CPU!r}]))
"""
    src = str(Path(video.__file__).parents[2])  # this tree's convscope, not an installed one
    done = subprocess.run([sys.executable, "-c", script], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": src})
    assert done.returncode == 130 and "nothing written" in done.stderr
    assert leftovers(out_dir) == []


@pytest.mark.parametrize("change, message", [
    ({"config": {"size": 32}}, "config must be a VideoConfig, not dict"),            # AttributeError before
    ({"config": video.VideoConfig(size="32")}, "--size must be a whole number"),    # TypeError before
    ({"config": video.VideoConfig(max_frames=None)}, "--max-frames must be a whole number"),
    ({"config": video.VideoConfig(crf=18.5)}, "--crf must be a whole number"),       # went to x264
    ({"config": video.VideoConfig(audio="no")}, "audio must be True or False"),     # counted as True
    ({"config": video.VideoConfig(temporal="0.5")}, "--temporal must be a number"),
    ({"stylizer": "starry_night"}, "stylizer must be a FastStylizer or an ArbitraryStylizer"),
    ({"callback": 5}, "callback must be a function"),                              # TypeError mid-run
    ({"comment": 5}, "comment must be a string"),
    ({"source": None}, "source must be the path of a video file"),
    ({"output": None}, "output must be the path of a video file"),
])
def test_stylize_video_api_checks_its_arguments(change, message, assets, out_dir):
    args = {"source": assets["clip"], "output": out_dir / "out.mp4",
            "stylizer": FastStylizer(str(assets["model"]), FastConfig(device="cpu", precision="fp32")), **change}
    with pytest.raises(ConfigError, match=message):
        video.stylize_video(**args)
    assert leftovers(out_dir) == []

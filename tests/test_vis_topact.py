"""Top activations over a folder (convscope.vis.topact, imagefolder, topact_sheet) and `convscope top-activations`.

The oracle is a hand-built HookedNet whose channel 0 fires on red and channel 1 on blue: over a
folder of tiny images, the top images of channel 0 must be exactly the red ones. Real nets are
built once per module (netcache) and given to the CLI by patching the engine's get_net.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from netcache import cached_get_net
from PIL import Image
from torch import nn

from tinynets import cifar_net
from convscope.cli import main
from convscope.errors import ConfigError
from convscope.images import pil_to_tensor, read_png_metadata
from convscope.nets import HookedNet, get_net, hook_count
from convscope.vis import imagefolder, loadnet, topact
from convscope.vis.attribution import Target, backproject
from convscope.vis.imagefolder import find_images, load_square
from convscope.vis.topact import (RunningTopK, TopActConfig, TopActivations, projections, parse_channels,
                                  receptive_field, top_activations)
from convscope.vis.topact_sheet import sheet_figure

CLASSES = [f"class{i}" for i in range(10)]


@pytest.fixture(scope="module", autouse=True)
def shared_nets():
    """Each real net is built once for this module; runs never change it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loadnet, "get_net", cached_get_net(get_net, {}))
        yield


def color_net() -> HookedNet:
    """Layer "4" [3, H/2, W/2]: ch0 = how red, ch1 = how blue, ch2 = how green (rectified), each
    blurred 3x3 and max-pooled 2x2, so the receptive field is 4 px with stride 2."""
    pick = nn.Conv2d(3, 3, 1)
    blur = nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False)
    with torch.no_grad():
        pick.weight.copy_(torch.tensor([[1.0, -1, -1], [-1, -1, 1], [-1, 1, -1]])[:, :, None, None])
        pick.bias.zero_()
        blur.weight.fill_(1 / 9)
    model = nn.Sequential(pick, nn.ReLU(), blur, nn.ReLU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(3, 10))
    net = HookedNet(model, nn.Identity(), "color-test", 32, CLASSES)
    net.requires_grad_(False)
    return net.eval()


def save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
    """30 images of 32 px: 9 with a red square, 9 with a blue one (brightness rising with the
    number), 12 grey noise; squares away from the border. Plus junk that must be skipped or ignored."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    truth = {"red": [], "blue": []}
    for i in range(30):
        grey = rng.integers(60, 200, (32, 32, 1))
        arr = np.repeat(grey, 3, axis=2) + rng.integers(-8, 9, (32, 32, 3))
        kind = "red" if i % 3 == 0 and i > 0 else "blue" if i % 3 == 1 and i < 27 else "grey"
        name = f"{'ab'[i % 2]}/img{i:02d}.png"   # two subfolders: the scan recurses
        if kind != "grey":
            level = 150 + 10 * (i // 3)           # later images are brighter: a known ranking
            y, x = rng.integers(6, 18, 2)
            arr[y:y + 8, x:x + 8] = (level, 20, 20) if kind == "red" else (20, 20, level)
            truth[kind].append((name, (int(y), int(x))))
        save(root / name, np.clip(arr, 0, 255))
    (root / "a" / "broken.jpg").write_bytes(b"not a jpeg at all" * 10)
    (root / "b" / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image, not counted")
    (root / ".DS_Store").write_bytes(b"\0\1junk")
    return root, truth


def fast(**kw) -> TopActConfig:
    return TopActConfig(**{"size": 32, "channels": "0-1", "device": "cpu", "precision": "fp32",
                           "batch_size": 8, **kw})


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------------------------ engine

def test_top_images_of_the_red_and_blue_channels_are_the_red_and_blue_images(colour_folder):
    root, truth = colour_folder
    net = color_net()
    result = top_activations(root, fast(layer="4"), net=net)
    assert result.found == 32 and result.scanned == 32
    assert sorted(p.name for p in result.skipped) == ["broken.jpg", "empty.png"]
    for channel, kind in ((0, "red"), (1, "blue")):
        winners = result.winners[channel]
        names = [w.path.relative_to(root).as_posix() for w in winners]
        assert sorted(names) == sorted(n for n, _ in truth[kind])
        # Brighter squares fire more: the ranking is the reverse of the file order.
        assert names == [n for n, _ in reversed(truth[kind])]
        assert [w.rank for w in winners] == list(range(1, 10))
        squares = dict(truth[kind])
        for w in winners:
            # The value is the channel's maximum over the image; its position lies on the square.
            x = pil_to_tensor(load_square(w.path, 32))
            act = net.features(x, ["4"])["4"][0, channel]
            assert w.value == pytest.approx(float(act.max()), rel=1e-5)
            y0, x0 = squares[w.path.relative_to(root).as_posix()]
            assert y0 - 2 <= 2 * w.row <= y0 + 8 and x0 - 2 <= 2 * w.col <= x0 + 8
            assert w.patch.size == (4, 4) and w.projection.size == (4, 4)
            top, left, bottom, right = w.box
            assert top <= y0 + 8 and bottom >= y0 and left <= x0 + 8 and right >= x0


def test_running_top_k_equals_a_brute_force_sort():
    gen = torch.Generator().manual_seed(1)
    acts = torch.randint(0, 40, (53, 3, 5, 6), generator=gen).float()  # small integers: many ties
    allowed = torch.zeros(5, 6, dtype=torch.bool)
    allowed[1:4, 1:5] = True
    for mask in (None, allowed):
        top = RunningTopK(3, 7)
        start = 0
        for size in (1, 8, 20, 5, 19):  # uneven batches
            top.update(acts[start:start + size], range(start, start + size), mask)
            start += size
        assert top.values.shape == (3, 7)  # O(channels * k), whatever the number of images
        masked = acts if mask is None else acts.masked_fill(~mask, float("-inf"))
        for c in range(3):
            per_image = [(float(masked[i, c].max()), i) for i in range(53)]
            expected = sorted(per_image, key=lambda t: (-t[0], t[1]))[:7]
            got = top.winners(c)
            assert [(v, i) for v, i, _, _ in got] == expected
            for v, i, r, col in got:
                assert masked[i, c, r, col] == v
                assert mask is None or mask[r, col]


def test_scan_holds_at_most_two_batches_of_pixels(colour_folder, monkeypatch):
    root, _ = colour_folder
    live, peak = [0], [0]
    real = imagefolder._load_batch

    def counting(*args, **kwargs):
        batch = real(*args, **kwargs)
        live[0] += 1
        peak[0] = max(peak[0], live[0])
        weakref.finalize(batch.pixels, lambda: live.__setitem__(0, live[0] - 1))
        return batch

    monkeypatch.setattr(imagefolder, "_load_batch", counting)
    engine = TopActivations(fast(layer="4", batch_size=3), color_net())
    scan = engine.scan(find_images(root))
    assert scan.scanned == 32 and len(scan.skipped) == 2
    assert peak[0] <= 2, peak  # 11 batches were loaded, never more than two alive at once


def test_receptive_field_is_measured_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 10))
    net = HookedNet(model, nn.Identity(), "rf-test", 32, CLASSES).requires_grad_(False).eval()
    # conv3 (3 px) -> pool 2 (4 px, stride 2) -> conv3 (4 + 2 * 2 = 8 px); position k sees 2k-3 .. 2k+4.
    rf = receptive_field(net, "3", 32)
    assert (rf.size, rf.stride, rf.offset) == ((8, 8), (2, 2), (-3, -3))
    assert rf.exact_box(0, 0, 32) == (0, 0, 5, 5)
    assert rf.box(0, 0, 32) == (0, 0, 8, 8)          # grown back inside the image
    assert rf.box(5, 7, 32) == (7, 11, 15, 19)
    allowed = rf.allowed(16, 16, 32)                  # whole fields: 2k - 3 >= 0 and 2k + 5 <= 32
    assert allowed[:, 0].nonzero()[:, 0].tolist() == [] and allowed[2:14, 2:14].all()
    assert allowed.sum() == 12 * 12
    vgg = loadnet.get_net("vgg19", "max", "cpu")
    rf = receptive_field(vgg, "relu3_4", 64)          # the textbook value: 48 px, stride 4
    assert (rf.size, rf.stride, rf.offset) == ((48, 48), (4, 4), (-22, -22))


def test_projection_is_the_deconvnet_projection_of_the_winning_activation(colour_folder):
    root, _ = colour_folder
    net = color_net()
    result = top_activations(root, fast(layer="4", channels="0", top=2, patch="image"), net=net)
    w = result.winners[0][0]
    x = pil_to_tensor(load_square(w.path, 32))
    grad = backproject(net, x, Target("4", 0, (w.row, w.col)), rule="deconvnet")
    shown = np.asarray(w.projection).astype(float)
    assert w.projection.size == (32, 32) and w.patch.size == (32, 32)
    # Outside the unit's field the projection is zero: one flat grey there, structure inside.
    outside = grad[0].abs().sum(0) == 0
    assert outside.any() and (~outside).any()
    flat = shown[outside.numpy()]
    assert np.ptp(flat, axis=0).max() == 0
    # Inside, the deconvnet sends the red detector's weights (+R, -G, -B) back: red on grey.
    inside = shown[~outside.numpy()]
    assert (inside[:, 0] > inside[:, 1] + 60).all() and (inside[:, 0] > flat[0, 0] + 30).all()


@pytest.mark.parametrize("name, rule", [("vgg19", "deconvnet"), ("resnet18:random", "deconvnet"),
                                        ("resnet18:random", "guided")])
def test_batched_projections_equal_one_backproject_per_image(name, rule):
    net = loadnet.get_net(name, "max", "cpu")
    x = torch.rand(4, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    layer = "relu2_2" if name == "vgg19" else "layer1"
    # Units picked from the activations, not fixed coordinates: at a closed ReLU (activation 0)
    # guided backprop is exactly zero, so fixed units made "resnet18:random-guided" a comparison of
    # zeros whenever the weights left them closed. Images 0-2 project the peak of their most active
    # channel not taken yet (units that fire, as top-activations projects them, each image its own
    # channel and position); image 3 a unit that does not fire.
    with torch.no_grad():
        act = net.features(x, [layer])[layer]
    units = []
    for i in range(3):
        channel = next(int(c) for c in act[i].amax((1, 2)).argsort(descending=True)
                       if int(c) not in [u[0] for u in units])
        row, col = divmod(int(act[i, channel].argmax()), act.shape[-1])
        assert act[i, channel, row, col] > 0
        units.append((channel, row, col))
    closed = (act[3] == 0).nonzero()
    units.append(tuple(int(v) for v in closed[len(closed) // 2]))
    batched = projections(net, x, layer, units, rule)
    for i, (channel, row, col) in enumerate(units):
        single = backproject(net, x[i:i + 1], Target(layer, channel, (row, col)), rule=rule)
        # float32 rounding differs with the batch size, and a firing unit of vgg19 (0..255 input)
        # projects values up to ~1000: tolerance relative to the projection's peak (in float64 the
        # two agreed exactly; a wrong unit or image would differ by the order of the peak).
        peak = float(single.abs().max())
        torch.testing.assert_close(batched[i:i + 1], single, rtol=1e-4, atol=max(1e-6, 1e-5 * peak))
    energy = batched.abs().flatten(1).sum(1)
    assert (energy[:3] > 0).all()  # not a comparison of zeros
    # The closed unit: guided backprop masks by the forward pass, the deconvnet does not.
    assert (energy[3] == 0) == (rule == "guided")


def test_border_positions_are_excluded_unless_asked_for(tmp_path):
    # A red bar on the very edge and a weaker red square inside: by default the inner one wins.
    arr = np.full((32, 32, 3), 128, np.uint8)
    arr[:, :2] = (255, 0, 0)
    arr[12:20, 12:20] = (200, 40, 40)
    save(tmp_path / "edge.png", arr)
    net = color_net()
    inner = top_activations(tmp_path, fast(layer="4", channels="0", top=1), net=net).winners[0][0]
    edge = top_activations(tmp_path, fast(layer="4", channels="0", top=1, border=True), net=net).winners[0][0]
    assert 5 <= inner.col <= 10 and edge.col == 0
    assert edge.value > inner.value


def test_channel_specs():
    assert parse_channels("0-7") == list(range(8))
    assert parse_channels("1,5,9") == [1, 5, 9]
    assert parse_channels(" 3, 0-2 ,3") == [3, 0, 1, 2]
    for bad in ("", "a", "3-1", "1,,2", "-2", "0-100", "1.5"):
        with pytest.raises(ConfigError):
            parse_channels(bad)
    with pytest.raises(ConfigError, match="channel 9 is out of range.*0 to 7"):
        parse_channels("0,9", count=8)
    with pytest.raises(ConfigError, match="--channels must be text such as 0-7 or 1,5,9, not 5"):
        TopActConfig(channels=5).validate()  # said "--channels is empty"


def test_bad_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    (tmp_path / "file.png").write_bytes(b"x")
    for folder, needle in (("empty", "no images"), ("text", "no images"), ("missing", "not found"),
                           ("file.png", "not a folder")):
        with pytest.raises(ConfigError, match=needle):
            find_images(tmp_path / folder)


def test_engine_checks_before_any_work():
    net = color_net()
    with pytest.raises(ConfigError, match="did you mean"):
        TopActivations(fast(layer="logit"), net)
    with pytest.raises(ConfigError, match="channel 3 is out of range"):
        TopActivations(fast(layer="4", channels="0-3"), net)
    with pytest.raises(ConfigError, match="no spatial grid"):
        TopActivations(fast(layer="logits"), net)
    with pytest.raises(ConfigError, match="too small"):
        TopActivations(fast(layer="4", size=1), net)
    for bad in ({"top": 0}, {"batch_size": 0}, {"fit": "pad"}, {"patch": "crop"}, {"size": 10**5}):
        with pytest.raises(ConfigError):
            fast(**bad).validate()


def test_interrupted_scan_keeps_what_was_seen(colour_folder):
    root, _ = colour_folder

    def ctrl_c(p):
        if p.stage == "scan" and p.done >= 8:
            raise KeyboardInterrupt

    result = top_activations(root, fast(layer="4"), net=color_net(), callback=ctrl_c)
    assert result.interrupted and result.scanned == 8
    first = set(find_images(root)[:8])
    assert all(w.path in first for ws in result.winners.values() for w in ws)
    reds = result.winners[0]
    assert len(reds) == 7  # the readable ones among the 8; a/img12 and a/img06 are the red ones
    assert [w.path.name for w in reds[:2]] == ["img12.png", "img06.png"] and reds[2].value == 0


def test_repeated_runs_leave_no_hooks_threads_or_modes_and_do_not_slow_down(colour_folder):
    root, _ = colour_folder
    net = color_net()
    engine = TopActivations(fast(layer="4", channels="0", top=1), net)
    paths = find_images(root)[:6]
    threads = threading.active_count()
    times = []
    for _ in range(20):
        start = time.perf_counter()
        engine.project(paths, engine.scan(paths))
        times.append(time.perf_counter() - start)
        assert hook_count(net) == 0 and torch._C._len_torch_function_stack() == 0
    assert threading.active_count() == threads  # the loader threads are gone after each scan
    first, last = sorted(times[:5])[2], sorted(times[-5:])[2]  # medians: robust to a busy machine
    assert last < 3 * first + 0.05, times


@pytest.mark.parametrize("name", ["vgg19", "efficientnet_lite0", "resnet18:random", "mobilenet_v3_small:random",
                                  "densenet121:random", "cifar-test"])
def test_every_net_runs_at_its_auto_layer(name, tmp_path):
    rng = np.random.default_rng(3)
    for i in range(5):
        save(tmp_path / f"{i}.png", rng.integers(0, 256, (40, 48, 3)))
    net = cifar_net() if name == "cifar-test" else loadnet.get_net(name, "max", "cpu")
    config = fast(net=name, channels="0,2", top=3, batch_size=2)
    result = top_activations(tmp_path, config, net=net)
    assert result.config.layer != "auto" and result.scanned == 5
    for ch in (0, 2):
        ws = result.winners[ch]
        assert len(ws) == 3
        assert [w.value for w in ws] == sorted((w.value for w in ws), reverse=True)
        assert all(w.patch.size == w.projection.size for w in ws)
    assert hook_count(net) == 0
    # Max pooling before the auto layer: the stems of resnet18 and densenet121, vgg19's pools.
    assert result.switches == (name in ("vgg19", "resnet18:random", "densenet121:random"))
    figure = sheet_figure(result)
    assert figure.mode == "RGB" and figure.width > 400


# --------------------------------------------------------------------------------------- CLI

def test_cli_writes_the_sheet_with_its_sidecar(capsys, colour_folder, tmp_path):
    root, _ = colour_folder
    out = tmp_path / "sheet.png"
    code, stdout, err = run(capsys, "top-activations", root, "--layer", "relu2_2", "--channels", "0-2",
                            "--size", "32", "--device", "cpu", "--batch-size", "16", "-o", out)
    assert code == 0, err
    assert stdout == ""
    assert "skipped 2 unreadable image(s)" in err and "a/broken.jpg" in err and "wrote" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sheet.json", "sheet.png"]
    meta = json.loads((tmp_path / "sheet.json").read_text())
    assert meta["command"] == "top-activations" and meta["config"]["layer"] == "relu2_2"
    assert meta["skipped_count"] == 2 and meta["images_found"] == 32
    assert sorted(meta["winners"]) == ["0", "1", "2"]
    first = meta["winners"]["0"][0]
    assert first["rank"] == 1 and (root / first["file"]).is_file()
    assert meta["receptive_field"]["size"] == [14, 14]
    assert read_png_metadata(out)["skipped_count"] == 2
    assert Image.open(out).width > 500


def test_cli_quiet_and_auto_layer(capsys, colour_folder, tmp_path):
    root, _ = colour_folder
    out = tmp_path / "sheet.png"
    code, stdout, err = run(capsys, "top-activations", root, "--channels", "5", "--size", "32", "--top", "4",
                            "--patch", "image", "--device", "cpu", "-q", "-o", out)
    assert code == 0, err
    assert err.startswith("convscope: warning: skipped 2") and err.count("\n") == 1
    assert json.loads((tmp_path / "sheet.json").read_text())["layer"] == "relu3_4"


def _ctrl_c_at(stage: str, done: int):
    """A stand-in for the command's progress bar that presses Ctrl-C once `stage` has done `done`."""
    def bar():
        def callback(p):
            if p.stage == stage and p.done >= done:
                raise KeyboardInterrupt
        return callback
    return bar


def test_cli_ctrl_c_saves_the_sheet_of_what_was_scanned(capsys, colour_folder, tmp_path, monkeypatch):
    from convscope.commands import top_activations as command

    monkeypatch.setattr(command, "progress_bar", _ctrl_c_at("scan", 16))
    root, _ = colour_folder
    out = tmp_path / "sheet.png"
    code, _, err = run(capsys, "top-activations", root, "--layer", "relu1_2", "--channels", "0", "--size", "32",
                       "--batch-size", "8", "--device", "cpu", "-o", out)
    assert code == 130 and "interrupted after 16 of 32" in err
    assert json.loads((tmp_path / "sheet.json").read_text())["interrupted"] is True


def test_cli_ctrl_c_during_the_projections_keeps_the_scan(capsys, colour_folder, tmp_path, monkeypatch):
    # Ctrl-C after the scan used to lose everything (exit 130, no sheet): the scan is the long part.
    from convscope.commands import top_activations as command

    monkeypatch.setattr(command, "progress_bar", _ctrl_c_at("project", 8))
    root, _ = colour_folder
    out = tmp_path / "sheet.png"
    code, _, err = run(capsys, "top-activations", root, "--layer", "relu1_2", "--channels", "0,1", "--size", "32",
                       "--device", "cpu", "-o", out)
    assert code == 130 and "interrupted during the projections (8 of 18 drawn)" in err and str(out) in err, err
    assert "Traceback" not in err and Image.open(out).mode == "RGB"
    meta = json.loads((tmp_path / "sheet.json").read_text())
    assert meta["interrupted"] is True and meta["projections_drawn"] == [8, 18]
    assert sum(len(ws) for ws in meta["winners"].values()) == 8


@pytest.mark.parametrize("argv, needles", [
    (["--layer", "relu2_l"], ["unknown layer 'relu2_l'", "did you mean"]),
    (["--channels", "60-70", "--layer", "relu1_1"], ["channel 64 is out of range"]),
    (["--channels", "7-3"], ["--channels", "backwards"]),
    (["--top", "0"], ["--top"]),
    (["--size", "8", "--layer", "relu5_1"], ["too small"]),
    (["--fit", "pad"], ["invalid choice"]),
])
def test_cli_bad_options_exit_2_with_nothing_written(capsys, colour_folder, tmp_path, argv, needles):
    root, _ = colour_folder
    out = tmp_path / "out" / "sheet.png"
    out.parent.mkdir()
    code, stdout, err = run(capsys, "top-activations", root, "--size", "32", "--device", "cpu", "-o", out, *argv)
    assert code == 2 and stdout == ""
    assert err.startswith("convscope: error:") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("kind", ["empty", "missing", "only-junk"])
def test_cli_bad_folder_exit_2_with_nothing_written(capsys, tmp_path, kind):
    folder = tmp_path / "in"
    if kind != "missing":
        folder.mkdir()
    if kind == "only-junk":
        (folder / "a.txt").write_text("x")
    out = tmp_path / "out" / "sheet.png"
    out.parent.mkdir()
    code, stdout, err = run(capsys, "top-activations", folder, "--device", "cpu", "-o", out)
    assert code == 2 and stdout == ""
    assert err.startswith("convscope: error:") and err.count("\n") == 1, err
    assert ("not found" if kind == "missing" else "no images") in err
    assert list(out.parent.iterdir()) == []


def test_cli_all_images_unreadable_is_an_error(capsys, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"junk" * 10)
    out = tmp_path / "out" / "sheet.png"
    out.parent.mkdir()
    code, stdout, err = run(capsys, "top-activations", folder, "--size", "32", "--device", "cpu", "-q", "-o", out)
    assert code == 2 and "none of the 1 image(s)" in err and err.count("\n") == 1, err
    assert list(out.parent.iterdir()) == []

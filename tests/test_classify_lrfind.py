"""The learning-rate range test (convscope.classify.lrfind) and `convscope classify lr-find`."""

from __future__ import annotations

import json
import math

import pytest

from convscope.classify.lrfind import centred, find_lr, suggest
from convscope.cli import main
from convscope.errors import ConfigError
from convscope.images import read_png_metadata
from test_classify_cli import make_folder
from test_classify_train import config, splits


def test_the_suggestion_is_where_the_loss_falls_fastest_before_its_lowest():
    lrs = [10 ** (-6 + 0.1 * i) for i in range(61)]  # 1e-6 .. 1
    # Flat, then falling fastest around 1e-3 (a logistic step in log10 lr), lowest at 1e-1, then a blow-up.
    loss = [2 - 1.5 / (1 + math.exp(-4 * (math.log10(lr) + 3))) + (30 * (math.log10(lr) + 1) ** 2 if lr > 0.1 else 0)
            for lr in lrs]
    steepest, lowest = suggest(lrs, loss)
    assert steepest == pytest.approx(1e-3, rel=0.3)
    assert lowest == pytest.approx(1e-1, rel=0.3)
    with pytest.raises(ConfigError, match=r"the loss blew up within 3 step\(s\) of --start 1e-06"):
        suggest(lrs[:3], [2.0, math.nan, math.nan])
    with pytest.raises(ConfigError, match="the loss did not fall"):
        suggest(lrs, [2.0 - 0.001 * i for i in range(61)])  # 3% over the sweep: noise, not a place to pick


def test_centred_smoothing_has_no_lag_and_skips_what_is_not_finite():
    assert centred([0, 0, 3, 0, 0], 1) == [0, 1, 1, 1, 0]
    assert centred([1, math.nan, 3], 1) == [1, 2, 3]
    ramp = [float(i) for i in range(20)]
    assert centred(ramp, 3)[5:15] == ramp[5:15]  # a trend stays where it is


def test_the_sweep_trains_the_recipe_and_is_repeatable():
    data = splits()
    seen = []
    result = find_lr(data, config(optimizer="adam"), start=1e-5, end=1.0, steps=40, callback=seen.append)
    assert len(result.lrs) == len(result.losses) == len(result.smoothed) == len(seen) <= 40
    assert result.lrs[0] == pytest.approx(1e-5) and all(b > a for a, b in zip(result.lrs, result.lrs[1:]))
    assert [p.lr for p in seen] == result.lrs and [p.loss for p in seen] == result.losses
    assert 1e-5 <= result.steepest <= result.minimum <= result.lrs[-1]
    # Learning happened in the sweep (the loss fell far below where it started), and the suggestion
    # lies where Adam learns this task: neither at the timid start nor where the loss blew up.
    assert min(result.smoothed) < 0.5 * result.smoothed[0]
    assert 1e-4 < result.steepest < 0.1
    again = find_lr(data, config(optimizer="adam"), start=1e-5, end=1.0, steps=40)
    assert again.losses == result.losses  # seeded: the same sweep twice


def test_a_loss_that_blows_up_ends_the_sweep():
    result = find_lr(splits(), config(optimizer="sgd"), start=1e-2, end=1e6, steps=60)
    assert result.diverged and len(result.lrs) < 60
    finite = [v for v in result.losses if math.isfinite(v)]
    assert not math.isfinite(result.losses[-1]) or result.losses[-1] > 4 * min(finite)  # it had blown up
    assert result.steepest <= result.minimum < result.lrs[-1]  # picked from before the blow-up
    with pytest.raises(ConfigError, match=r"the loss blew up within \d+ step\(s\) of --start 1e\+05"):
        find_lr(splits(), config(optimizer="sgd"), start=1e5, end=1e9, steps=20)


def test_a_sweep_where_the_loss_never_falls_suggests_nothing():
    with pytest.raises(ConfigError, match=r"the loss did not fall between 1e-09 and 1e-08 .*sweep higher rates"):
        find_lr(splits(), config(optimizer="sgd"), start=1e-9, end=1e-8, steps=20)


@pytest.mark.parametrize("kwargs, message", [
    (dict(start=0), "--start must be a learning rate above 0"),
    (dict(end=1e300), r"--end must be a learning rate above 0 and at most 1e\+12"),  # was an overflow traceback
    (dict(start=1.0, end=0.5), r"--start \(1\) must be below --end \(0.5\)"),
    (dict(steps=5), "--steps must be a whole number from 10"),
    (dict(alternate_flip=True), "add --flip or drop --alternate-flip"),  # no flips to alternate: was ignored
])
def test_bad_sweeps_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        sweep = {k: kwargs.pop(k) for k in ("start", "end", "steps") if k in kwargs}
        find_lr(splits(), config(**kwargs), **sweep)


def test_cli_prints_the_suggestion_and_draws_the_sweep(tmp_path, capsys):
    data = make_folder(tmp_path / "data", n_train=8, n_test=2, size=16, corrupt=False)
    base = ["classify", "lr-find", "--data", str(data), "--input-size", "16", "--batch-size", "4", "--steps", "30",
            "--optimizer", "adam", "--start", "1e-5", "--end", "1", "--device", "cpu", "--cache-dir", str(tmp_path / "c")]
    assert main(base + ["-o", str(tmp_path / "lr.png"), "-q"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("suggested --lr ") and "simple's recipe uses 1" in out
    meta = read_png_metadata(tmp_path / "lr.png")
    assert meta["suggested_lr"] > 0 and meta["config"]["model"] == "simple"
    assert main(base + ["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["suggested_lr"] == meta["suggested_lr"] and 10 < len(report["lrs"]) <= 30
    assert "epochs" not in meta["config"] and meta["config"]["optimizer"] == "adam"  # what the sweep used
    # What the sweep has no use for is refused, not ignored; a bad sweep is said before anything loads.
    assert main(base + ["--epochs", "3"]) == 2
    assert "unrecognized arguments: --epochs 3" in capsys.readouterr().err
    assert main(base + ["--start", "1", "--end", "0.1"]) == 2
    assert "--start (1) must be below --end (0.1)" in capsys.readouterr().err
    # No flips to alternate (simple's recipe has none): the sweep ignored it with exit 0.
    assert main(base + ["--alternate-flip", "--json"]) == 2
    assert "add --flip or drop --alternate-flip" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "data", "lr.json", "lr.png"]  # the figure alone


def test_a_frozen_backbone_sweeps_its_head_on_cached_features(tmp_path):
    cfg = config(model="transfer:vgg19", input_size=32, hidden=(32,))
    result = find_lr(splits(size=32), cfg, start=1e-5, end=1.0, steps=12, cache_dir=tmp_path)
    assert len(result.lrs) >= 10 and all(math.isfinite(v) for v in result.losses[:10])
    assert len(list(tmp_path.iterdir())) == 1  # the training images' features (cached as training does), no others

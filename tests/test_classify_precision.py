"""A frozen backbone's feature pass on the CPU: `--precision auto` runs it in bf16 (NHWC) where the
CPU computes bf16 natively (the same test as style transfer's `auto`), and bf16 features are cached
apart from float32 ones; the training steps keep their arithmetic."""

from __future__ import annotations

import pytest
import torch

from convscope.classify import optim
from convscope.classify import setup as classify_setup
from convscope.classify.config import TrainConfig
from convscope.classify.data import DataSplits, ImageData
from convscope.classify.features import bottleneck_features
from convscope.classify.models import TransferModel
from convscope.classify.optim import feature_precision, resolve_precision
from convscope.classify.setup import prepare

CPU = torch.device("cpu")


def tiny(n: int, size: int, seed: int) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return ImageData(images, torch.arange(n) % 2, ["a", "b"], None, [])


@pytest.mark.parametrize("native, want", [(True, "bf16"), (False, "fp32")])
def test_auto_on_the_cpu_computes_features_in_bf16_only_where_the_cpu_has_it_natively(monkeypatch, native, want):
    monkeypatch.setattr(optim, "cpu_has_native_bf16", lambda: native)
    assert feature_precision("auto", CPU) == want
    assert feature_precision("fp32", CPU) == "fp32" and feature_precision("bf16", CPU) == "bf16"  # asked: kept
    assert feature_precision("auto", torch.device("cuda")) == "fp32"  # as before
    # The training steps stay float32 on the CPU (bf16 slowed resnet-fast's backward there), except
    # simple's, which bf16 made faster where the CPU has it natively.
    assert resolve_precision("auto", CPU) == "fp32" and resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_precision("auto", CPU, "resnet-fast") == resolve_precision("auto", CPU, "vgg19-bn") == "fp32"
    assert resolve_precision("auto", CPU, "transfer:vgg19") == "fp32"
    assert resolve_precision("auto", CPU, "simple") == want
    assert resolve_precision("fp32", CPU, "simple") == "fp32" and resolve_precision("auto", torch.device("cuda"), "simple") == "bf16"


@pytest.mark.parametrize("native", [True, False])
def test_a_frozen_backbones_feature_pass_runs_in_bf16_on_such_a_cpu(monkeypatch, tmp_path, native):
    monkeypatch.setattr(optim, "cpu_has_native_bf16", lambda: native)
    seen = []
    real = classify_setup.bottleneck_features

    def spy(*args):
        seen.append(args[-2:])
        return real(*args)

    monkeypatch.setattr(classify_setup, "bottleneck_features", spy)
    splits = DataSplits(tiny(4, 32, 0), tiny(2, 32, 1), "synthetic", "test")
    config = TrainConfig(model="transfer:vgg19", epochs=1, batch_size=2, input_size=32, hidden=(8,),
                         device="cpu").resolved()
    setup = prepare(splits, config, CPU, cache_dir=tmp_path)
    assert seen == [("bf16", True)] * 2 if native else [("fp32", False)] * 2  # (precision, NHWC): train, val
    assert setup.precision == "fp32" and not setup.channels_last  # the head's steps: as before
    convs = [m for m in setup.model.modules() if isinstance(m, torch.nn.Conv2d)][1:]  # (the first has 3 inputs)
    assert convs and not any(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert setup.train_x.dtype == torch.float32


@pytest.mark.parametrize("native", [True, False])
def test_auto_trains_simple_in_bf16_on_such_a_cpu_and_resnet_fast_in_float32(monkeypatch, native):
    monkeypatch.setattr(optim, "cpu_has_native_bf16", lambda: native)
    splits = DataSplits(tiny(8, 16, 0), tiny(4, 16, 1), "synthetic", "test")
    for model, want in (("simple", "bf16" if native else "fp32"), ("resnet-fast", "fp32")):
        config = TrainConfig(model=model, epochs=1, batch_size=4, input_size=16, device="cpu").resolved()
        setup = prepare(splits, config, CPU)
        assert setup.precision == want, model
        assert isinstance(setup.autocast, torch.autocast) == (want == "bf16"), model


@pytest.mark.parametrize("precision, channels_last", [("bf16", True), ("fp32", True), ("fp32", False)])
def test_nhwc_on_the_cpu_where_asked_in_either_precision(precision, channels_last):
    splits = DataSplits(tiny(8, 16, 0), tiny(4, 16, 1), "synthetic", "test")
    config = TrainConfig(model="simple", epochs=1, batch_size=4, input_size=16, device="cpu",
                         precision=precision, channels_last=channels_last).resolved()
    setup = prepare(splits, config, CPU)
    assert setup.channels_last == channels_last
    assert setup.model.features[0].weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    x, _ = next(setup.batches(config, 0))
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_bottleneck_features_in_bf16_are_cached_apart_from_float32_ones(tmp_path):
    model = TransferModel("vgg19", 2, 32, hidden=(8,))
    data = tiny(6, 32, 2)
    fp32 = bottleneck_features(model, data, CPU, 4, tmp_path)
    bf16 = bottleneck_features(model, data, CPU, 4, tmp_path, precision="bf16", channels_last=True)
    assert len(list(tmp_path.iterdir())) == 2  # two keys: neither run takes the other's features
    assert fp32.dtype == bf16.dtype == torch.float32 and fp32.shape == bf16.shape
    assert not torch.equal(fp32, bf16)  # computed in bf16, not read from the float32 file
    assert (bf16 - fp32).norm() < 0.05 * fp32.norm()
    assert torch.equal(bottleneck_features(model, data, CPU, 4, tmp_path, precision="bf16"), bf16)  # cached
    nhwc = bottleneck_features(model, data, CPU, 4, None, channels_last=True)
    torch.testing.assert_close(nhwc, fp32, rtol=1e-4, atol=1e-3)  # the layout alone changes nothing


def test_fine_tuning_on_the_cpu_trains_in_nhwc(tmp_path):
    # Unlike the frozen backbone's forward-only feature pass, fine-tuning trains through the
    # convolutions, where NHWC measured about 1.7x faster on the CPU.
    splits = DataSplits(tiny(4, 32, 0), tiny(2, 32, 1), "synthetic", "test")
    config = TrainConfig(model="transfer:vgg19", epochs=1, batch_size=2, input_size=32, hidden=(8,), finetune=1,
                         device="cpu", precision="fp32").resolved()
    setup = prepare(splits, config, CPU, cache_dir=tmp_path)
    assert not setup.cached and setup.channels_last
    convs = [m for m in setup.model.modules() if isinstance(m, torch.nn.Conv2d)][1:]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)


@pytest.mark.parametrize("channels_last", [True, False])
def test_evaluate_runs_in_the_layout_the_run_trained_in_and_gives_the_same_answer(monkeypatch, channels_last):
    # Evaluation ran NCHW whatever the run trained in: on the CPU, NHWC evaluated resnet-fast's
    # 10,000 CIFAR-10 images about 1.4x faster. The model is handed back in NCHW, as loaded.
    from pathlib import Path

    from convscope.classify import predict

    torch.manual_seed(0)
    model = predict.build_model("resnet-fast", 2, 16).eval().requires_grad_(False)
    loaded = predict.LoadedRun(model, TrainConfig(model="resnet-fast", input_size=16, channels_last=channels_last),
                               ["a", "b"], 16, Path("fake"))
    data = tiny(6, 16, 3)
    seen = []
    real = predict.predict_logits

    def spy(model, x, *args, **kwargs):
        conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][1]  # (the first has 3 inputs)
        seen.append((conv.weight.is_contiguous(memory_format=torch.channels_last), kwargs.get("channels_last")))
        return real(model, x, *args, **kwargs)

    monkeypatch.setattr(predict, "predict_logits", spy)
    ev = predict.evaluate(loaded, data.images, data.labels, "cpu", tta="flip")
    assert seen == [(channels_last, channels_last)]
    expected = (model(data.images.float() / 255) + model(data.images.flip(3).float() / 255)).argmax(1)
    assert ev.accuracy == pytest.approx((expected == data.labels).float().mean().item())
    assert all(p.is_contiguous() for p in model.parameters())  # handed back as loaded

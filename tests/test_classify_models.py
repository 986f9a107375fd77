"""Classifier architectures: the reference shapes, pretrained initialization, transfer heads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convscope.classify.models import SimpleCNN, TransferModel, VGG19BN, build_model, check_model_name
from convscope.errors import ConfigError
from convscope.nets import get_net


def test_simple_is_exactly_the_reference():
    m = SimpleCNN(10)
    kinds = [type(x).__name__ for x in list(m.features) + list(m.classifier)]
    assert kinds == ["Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d", "Dropout",
                     "Flatten", "Linear", "ReLU", "Dropout", "Linear"]
    assert m.features[5].p == 0.25 and m.classifier[3].p == 0.5
    # Keras' count for this network on 32x32x3 inputs (3x3 'valid' convolutions): 1,626,442.
    assert sum(p.numel() for n, p in m.named_parameters()) == 1_626_442
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_vgg19_bn_starts_from_the_original_filters():
    """The first conv sees RGB normalized by mean/std instead of Caffe's BGR 0..255 minus means:
    after the conversion, its responses equal the original filter's up to a constant per channel
    (which BatchNorm absorbs)."""
    torch.manual_seed(0)
    model = VGG19BN(10).load_imagenet_convs().eval()
    caffe = get_net("vgg19")
    x = torch.rand(1, 3, 32, 32)
    ours = nn.functional.conv2d(model.normalize(x), model.features[0][0].weight)
    theirs = nn.functional.conv2d(caffe.preprocess(x), caffe.layers[0].weight)
    diff = (ours - theirs)[0]
    assert torch.allclose(diff, diff.mean(dim=(1, 2), keepdim=True), atol=1e-2 * theirs.abs().max().item())
    for mine, orig in zip([m for m in model.features.modules() if isinstance(m, nn.Conv2d)][1:],
                          [m for m in caffe.layers if isinstance(m, nn.Conv2d)][1:]):
        assert torch.equal(mine.weight, orig.weight)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_transfer_models_and_their_blocks():
    vgg = build_model("transfer:vgg19", 5, 64, hidden=(16,))
    assert vgg.feature_shape == (512, 2, 2) and len(vgg.backbone_blocks()) == 5
    assert vgg(torch.rand(2, 3, 32, 32)).shape == (2, 5)  # upsampled to 64 inside
    lite = build_model("transfer:efficientnet_lite0", 3, 224, hidden=(8,))
    assert isinstance(lite, TransferModel) and lite.feature_shape[0] == 1280
    assert len(lite.backbone_blocks()) == 18


def test_model_names_checked_with_suggestions():
    check_model_name("resnet18")
    check_model_name("vgg19_bn")  # torchvision's, at random init
    with pytest.raises(ConfigError, match="did you mean 'simple'"):
        check_model_name("simpel")
    with pytest.raises(ConfigError, match="transfer backbone"):
        check_model_name("transfer:resnet")
    with pytest.raises(ConfigError, match="at least 2 classes"):
        build_model("simple", 1)


def test_input_sizes_a_model_cannot_take_are_refused_before_any_data_is_read(tmp_path, capsys):
    # alexnet (and vit_b_16, inception_v3) at the recipe's 32 px failed at the first training step
    # with a traceback; transfer:vgg19 below 32 px said "use a larger image or a shallower layer".
    from convscope.classify.models import check_input_size
    from convscope.cli import main

    check_input_size("resnet18", 8)  # (adaptive pooling: any size)
    for name, size, words in (("alexnet", 32, "model alexnet cannot take 32 px images (Given input size"),
                              ("vit_b_16", 32, "model vit_b_16 cannot take 32 px images (Wrong image height"),
                              ("transfer:vgg19", 16, "model transfer:vgg19 needs inputs of at least 32 px")):
        with pytest.raises(ConfigError) as e:
            check_input_size(name, size)
        assert str(e.value).startswith(words) and "--input-size" in str(e.value)
    with pytest.raises(ConfigError, match="cannot take 32 px images"):
        build_model("alexnet", 3, 32)
    for command in ("train", "lr-find"):
        out = ["-o", str(tmp_path / "run")] if command == "train" else []
        assert main(["classify", command, "--data", str(tmp_path / "nothing_yet"), "--model", "alexnet", *out,
                     "--device", "cpu", "-q", *(["--json"] if command == "lr-find" else [])]) == 2
        err = capsys.readouterr().err
        assert "cannot take 32 px images" in err and err.count("\n") == 1 and not (tmp_path / "run").exists()


def test_torchvision_models_with_auxiliary_heads_train():
    # In training mode googlenet returned (logits, aux1, aux2): an AttributeError traceback at the loss.
    model = build_model("googlenet", 3, 32).train()
    logits = model(torch.rand(2, 3, 32, 32))
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 3)


# ---- resnet-fast ------------------------------------------------------------------------------
def _blobs(n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """float images in [0, 1] of three classes (a bright square in the red, green or blue channel)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * 0.25
    y = torch.arange(n) % 3
    for i in range(n):
        r, c = torch.randint(0, size - 8, (2,), generator=g).tolist()
        x[i, y[i], r:r + 8, c:c + 8] = 0.9
    return x, y


def test_resnet_fast_shape_parameters_and_names():
    from convscope.classify.models import ResNetFast, model_names

    check_model_name("resnet-fast")
    assert "resnet-fast" in model_names()
    torch.manual_seed(0)
    m = build_model("resnet-fast", 10)
    assert isinstance(m, ResNetFast)
    # whitening 2x2 conv 3->24 (288 fixed + 24 bias), stages 24->64, 64->256, 256->256 (two 3x3 convs
    # and two BN shifts each), linear 256x10 without bias.
    assert sum(p.numel() for p in m.parameters()) == 1_971_640
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) == 1_971_352
    m.eval()
    assert m(torch.rand(3, 3, 32, 32)).shape == (3, 10)
    assert m(torch.rand(2, 3, 48, 48)).shape == (2, 10)  # global pooling: any size from 16 px
    with pytest.raises(ConfigError, match="at least 16 px"):
        build_model("resnet-fast", 10, input_size=12)
    with pytest.raises(ConfigError, match="did you mean 'resnet-fast'"):
        check_model_name("resnet-fats")


def test_global_max_pool_is_adaptive_max_pool():
    from convscope.classify.models import GlobalMaxPool

    x = torch.randn(4, 6, 3, 5, requires_grad=True)
    ours, ref = GlobalMaxPool(), torch.nn.AdaptiveMaxPool2d(1)
    assert isinstance(ours, torch.nn.AdaptiveMaxPool2d)  # what explain's max-pooling note looks for
    y = ours(x)
    assert torch.equal(y, ref(x)) and y.shape == (4, 6, 1, 1)
    g = torch.randn_like(y)
    (a,) = torch.autograd.grad(y, x, g)
    (b,) = torch.autograd.grad(ref(x), x, g)
    assert torch.equal(a, b)  # no ties in random data: the gradient goes to the same element


def test_training_turns_cudnn_autotuning_on_and_restores_it():
    from convscope.classify.train import cudnn_autotuning

    before = torch.backends.cudnn.benchmark
    with pytest.raises(RuntimeError):
        with cudnn_autotuning():
            assert torch.backends.cudnn.benchmark
            raise RuntimeError("stop")
    assert torch.backends.cudnn.benchmark == before


def test_resnet_fast_whitens_on_its_first_training_batch_only():
    torch.manual_seed(0)
    m = build_model("resnet-fast", 3)
    # Smooth images: neighbouring pixels and channels strongly correlated, as in photos.
    base = torch.rand(64, 1, 8, 8)
    x = (0.7 * nn.functional.interpolate(base, size=32, mode="bilinear", align_corners=False)
         + 0.3 * torch.rand(64, 3, 32, 32)).clamp(0, 1)
    m.eval()
    m(x)  # evaluation never whitens
    assert not bool(m.whiten.whitened)
    m.train()
    m(x)
    assert bool(m.whiten.whitened)
    w = m.whiten
    out = nn.functional.conv2d(m.normalize(x), w.weight, w.bias)  # [N, 24, 31, 31], before the GELU
    half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).double()
    assert half.mean(0).abs().max() < 1e-3                      # zero mean
    cov = torch.cov(half.T)
    assert torch.allclose(cov, torch.eye(12, dtype=cov.dtype), atol=0.05)  # white (eigenvalues >> eps)
    assert torch.equal(out[:, 12:], -out[:, :12])               # and the negated copy
    assert not w.weight.requires_grad and w.bias.requires_grad
    # Later batches and a loaded model keep the filters: the flag travels with the weights.
    before = w.weight.clone()
    m(torch.rand(8, 3, 32, 32))
    assert torch.equal(w.weight, before)
    fresh = build_model("resnet-fast", 3)
    fresh.load_state_dict(m.state_dict())
    fresh.train()(torch.rand(8, 3, 32, 32))
    assert torch.equal(fresh.whiten.weight, before)


def test_resnet_fast_training_steps_lower_the_loss():
    from convscope.classify.models import ResNetFast

    torch.manual_seed(0)
    m = ResNetFast(3, widths=(16, 32, 32))  # the same code as the registered model, narrower: fast on a CPU
    x, y = _blobs(48, 0)
    opt = torch.optim.SGD(m.parameters(), lr=0.2, momentum=0.9, nesterov=True)
    losses = []
    m.train()
    with torch.no_grad():
        assert m(x).abs().max() < 1.0  # the 1/9 output scale: small logits at the start (features reach ~4)
    for _ in range(12):
        loss = nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_resnet_fast_recipe():
    from convscope.classify.config import TrainConfig

    fast = TrainConfig(model="resnet-fast").resolved()
    assert (fast.epochs, fast.batch_size, fast.optimizer, fast.schedule) == (12, 1024, "sgd", "onecycle")
    assert fast.label_smoothing == 0.2 and fast.flip and fast.translate == 2 and fast.input_size == 32
    assert fast.alternate_flip
    assert TrainConfig(model="resnet-fast", label_smoothing=0.0).resolved().label_smoothing == 0.0
    assert not TrainConfig(model="resnet-fast", alternate_flip=False).resolved().alternate_flip
    assert TrainConfig(model="simple").resolved().label_smoothing == 0.0
    assert not TrainConfig(model="vgg19-bn").resolved().alternate_flip
    # --no-flip drops the recipe's alternating flips (nothing to alternate), so resolving never
    # yields alternate_flip without flips, which train() refuses when asked for.
    assert not TrainConfig(model="resnet-fast", flip=False).resolved().alternate_flip
    from convscope.classify.config import check_command_options
    from convscope.errors import ConfigError
    check_command_options(TrainConfig(model="resnet-fast", flip=False).resolved())
    with pytest.raises(ConfigError, match="drop --alternate-flip"):
        check_command_options(TrainConfig(model="simple", alternate_flip=True))


def test_finetuning_recipe_runs_few_epochs():
    from convscope.classify.config import TrainConfig

    frozen = TrainConfig(model="transfer:efficientnet_lite0").resolved()
    tuned = TrainConfig(model="transfer:efficientnet_lite0", finetune=18).resolved()
    assert (frozen.epochs, tuned.epochs) == (30, 4) and tuned.input_size == frozen.input_size == 224
    assert TrainConfig(model="transfer:vgg19", finetune=2, epochs=7).resolved().epochs == 7


def test_classify_train_resnet_fast_via_the_cli(tmp_path):
    import json

    import numpy as np
    from PIL import Image

    from convscope.cli import main

    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 3)):
        for ci, name in enumerate(("red", "green", "blue")):
            folder = tmp_path / "data" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 60, (32, 32, 3)).astype(np.uint8)
                a[4:12, 4:12, ci] = 230
                Image.fromarray(a).save(folder / f"{i}.png")
    run = tmp_path / "run"
    code = main(["classify", "train", "--data", str(tmp_path / "data"), "--model", "resnet-fast", "-o", str(run),
                 "--epochs", "1", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "-q"])
    assert code == 0
    info = json.loads((run / "config.json").read_text())
    assert info["config"]["model"] == "resnet-fast" and info["config"]["batch_size"] == 1024
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2
    from convscope.classify.predict import load_run

    loaded = load_run(run)
    assert bool(loaded.model.whiten.whitened)  # whitened during training, saved with the weights
    assert loaded.model(torch.rand(2, 3, 32, 32)).shape == (2, 3)


def test_head_options_a_model_cannot_use_are_refused():
    # --hidden and --dropout were accepted and ignored (and recorded in config.json) for models
    # whose head is fixed.
    from convscope.classify.config import TrainConfig

    for model in ("simple", "resnet-fast", "vgg19-bn"):
        with pytest.raises(ConfigError, match="--hidden"):
            TrainConfig(model=model, hidden=(7,)).resolved()
    for model in ("simple", "resnet-fast"):
        with pytest.raises(ConfigError, match="--dropout"):
            TrainConfig(model=model, dropout=0.1).resolved()
    assert TrainConfig(model="vgg19-bn", dropout=0.1).resolved().dropout == 0.1
    assert TrainConfig(model="transfer:vgg19", hidden=[7], dropout=0.1).resolved().hidden == [7]
    assert TrainConfig(model="simple", hidden=[512, 256]).resolved()  # the default, as a JSON list


def test_optimizer_options_a_run_would_ignore_are_refused():
    # --backbone-lr without --finetune (a frozen backbone) and --momentum with adam ran without a word.
    from convscope.classify.config import TrainConfig

    with pytest.raises(ConfigError, match="--backbone-lr .* without --finetune"):
        TrainConfig(model="transfer:vgg19", backbone_lr=0.5).resolved()
    assert TrainConfig(model="transfer:vgg19", finetune=1, backbone_lr=0.5).resolved().backbone_lr == 0.5
    with pytest.raises(ConfigError, match="--momentum is sgd.s; the optimizer here is adam"):
        TrainConfig(model="simple", optimizer="adam", momentum=0.5).resolved()
    with pytest.raises(ConfigError, match="optimizer here is adadelta .*the model.s recipe"):  # simple: adadelta
        TrainConfig(model="simple", momentum=0.5).resolved()
    assert TrainConfig(model="simple", optimizer="sgd", momentum=0.5).resolved().momentum == 0.5


def test_a_warmup_as_long_as_the_run_is_refused():
    # The learning rate never reached --lr: warm-up 5 of 3 epochs trained at 1/15 to 3/5 of it, exit 0.
    from convscope.classify.config import TrainConfig, check_command_options

    with pytest.raises(ConfigError, match="--warmup 5 is not shorter than the run's 3 epochs"):
        check_command_options(TrainConfig(model="simple", epochs=3, warmup=5))
    with pytest.raises(ConfigError, match="--warmup 4 is not shorter than the run's 4 epochs"):
        check_command_options(TrainConfig(model="transfer:vgg19", finetune=1, warmup=4))  # its recipe: 4 epochs
    check_command_options(TrainConfig(model="transfer:vgg19", finetune=1, warmup=3.5))
    check_command_options(TrainConfig(model="simple", epochs=3, warmup=2.9))

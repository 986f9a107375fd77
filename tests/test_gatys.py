"""Gatys style transfer engine: properties on tiny images (the CLI is tested in test_cli.py)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

import convscope

from convscope import images
from convscope.errors import ConfigError, ImageError
from convscope.nets import get_net
from convscope.style.config import PRESETS, StyleConfig
from convscope.style.gatys import StyleObjective, stylize_images


def picture(seed, size=(48, 40)):
    g = torch.Generator().manual_seed(seed)
    # Smooth colour blobs: something a CNN has structure to work with.
    small = torch.rand(1, 3, 5, 4, generator=g)
    x = torch.nn.functional.interpolate(small, size=(size[1], size[0]), mode="bicubic").clamp(0, 1)
    return images.tensor_to_pil(x)


def tiny(**kw):
    return StyleConfig(**{"size": 48, "iterations": 12, "device": "cpu", **kw})


def test_loss_goes_down_and_output_has_content_size():
    result = stylize_images(picture(0), [picture(1)], tiny())
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.7 * losses[0]
    assert result.image.size == (48, 40)
    assert result.losses["loss"] <= min(losses) + 1e-5  # the best evaluated image is returned
    assert [label.split(":")[0] for label, _ in result.snapshots] == ["first", "middle", "last"]


@pytest.mark.parametrize("preset, content_block", [("gatys", 4), ("johnson", 1)])
def test_presets_on_a_net_without_vgg_names_use_its_blocks(preset, content_block):
    # The presets name VGG layers: `--net efficientnet_lite0` stopped at "unknown layer block5_conv2".
    net = get_net("efficientnet_lite0")
    blocks = net.block_outputs()[:5]
    result = stylize_images(picture(0, (64, 48)), [picture(1, (64, 48))], tiny(net="efficientnet_lite0", size=64,
                                                                               preset=preset))
    assert result.config.style_layers == tuple(blocks)
    assert result.config.content_layers == (blocks[content_block],)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.85 * losses[0]  # (12 iterations at 64 px)
    given = stylize_images(picture(0, (64, 48)), [picture(1, (64, 48))],
                           tiny(net="efficientnet_lite0", size=64, iterations=2, content_layers=("blocks.3",)))
    assert given.config.content_layers == ("blocks.3",) and given.config.style_layers == tuple(blocks)


def test_style_layer_weights_count_a_small_nets_own_blocks(tmp_path, monkeypatch):
    # They were checked against the preset's five VGG layers: a CIFAR run with two blocks refused two
    # weights, and five were silently cut to two (no longer summing to 1). (A run folder named vgg*
    # is no VGG of the registry.)
    from convscope.classify.config import TrainConfig
    from convscope.classify.data import DataSplits, ImageData
    from convscope.classify.run import RunDir
    from convscope.classify.train import train

    g = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 255, (8, 3, 16, 16), dtype=torch.uint8, generator=g), torch.arange(8) % 2,
                     ["a", "b"], None, [])
    train(DataSplits(data, data, "synthetic", "test"),
          TrainConfig(model="simple", epochs=1, batch_size=4, input_size=16, device="cpu"),
          RunDir(tmp_path / "vgg_cifar"))
    monkeypatch.chdir(tmp_path)
    blocks = get_net("vgg_cifar").block_outputs()
    assert len(blocks) == 2
    run = tiny(net="vgg_cifar", size=32, iterations=2)
    weighted = stylize_images(picture(0), [picture(1)], replace(run, style_layer_weights=(1.0, 3.0)))
    assert weighted.config.style_layers == tuple(blocks) and weighted.config.layer_weights() == (0.25, 0.75)
    with pytest.raises(ConfigError, match="5 weight.s. for 2 style layer"):
        stylize_images(picture(0), [picture(1)], replace(run, style_layer_weights=(1.0,) * 5))


def test_blend_of_identical_styles_equals_one_style():
    net = get_net("vgg19")
    c = images.pil_to_tensor(picture(0))
    s = images.pil_to_tensor(picture(1))
    one = StyleObjective(net, c, [s], [1.0], tiny())
    two = StyleObjective(net, c, [s, s], [0.25, 0.75], tiny())
    for name in one.gram_targets:
        torch.testing.assert_close(one.gram_targets[name], two.gram_targets[name])


def test_relative_normalization_makes_layers_comparable():
    net = get_net("vgg19")
    obj = StyleObjective(net, images.pil_to_tensor(picture(0)), [images.pil_to_tensor(picture(1))], [1.0],
                         tiny())
    # Each layer's target scaled by its scale factor has mean square 1.
    for name, g in obj.gram_targets.items():
        assert (g.pow(2).mean() * obj.style_scale[name]).item() == pytest.approx(1.0, rel=1e-4)


def test_noise_init_is_repeatable_with_a_seed():
    a = stylize_images(picture(0), [picture(1)], tiny(init="noise", seed=3, iterations=3)).image
    b = stylize_images(picture(0), [picture(1)], tiny(init="noise", seed=3, iterations=3)).image
    c = stylize_images(picture(0), [picture(1)], tiny(init="noise", seed=4, iterations=3)).image
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()


def test_multiscale_stages():
    assert StyleConfig(size=512).stage_sizes() == [512]
    assert StyleConfig(size=1024).stage_sizes() == [512, 1024]
    assert StyleConfig(size=2048).stage_sizes() == [512, 1024, 2048]
    assert StyleConfig(size=2048, iterations=400).stage_iterations() == [400, 200, 100]
    assert StyleConfig(iterations=400).stage_iterations(2) == [400, 200]
    result = stylize_images(picture(0, (64, 64)), [picture(1)], tiny(size=64, scales=2, iterations=4))
    # Finer stages run half as many iterations but never fewer than min(50, iterations).
    assert result.stage_sizes == [(32, 32), (64, 64)] and len(result.history) == 4 + 4


def test_style_layer_weights_normalized_and_checked():
    assert StyleConfig(style_layer_weights=(1, 1, 2, 0, 0)).layer_weights() == (0.25, 0.25, 0.5, 0, 0)
    with pytest.raises(ConfigError, match="one per layer"):
        StyleConfig(style_layer_weights=(1, 2)).validate()


@pytest.mark.parametrize("bad", [dict(style_weight=-1), dict(content_weight=float("nan")), dict(size=0),
                                 dict(size=10**6), dict(iterations=0), dict(style_scale=0),
                                 dict(preset="nope"), dict(optimizer="newton"), dict(lr_decay=2.0),
                                 dict(style_blend=(0, 0)), dict(preserve_color="sepia"),
                                 dict(style_blend=1), dict(style_layer_weights="11111"), dict(lr_decay="0.9"),
                                 dict(init=None), dict(style_layers=("relu1_1", 2))])
def test_config_validation(bad):
    with pytest.raises(ConfigError):
        StyleConfig(**bad).validate()


@pytest.mark.parametrize("bad, message", [
    (dict(lr_decay=0.5), "--lr-decay applies to --optimizer adam and sgd only"),
    (dict(lbfgs_history=10, optimizer="adam"), "--lbfgs-history applies to --optimizer lbfgs only"),
])
def test_options_the_optimizer_would_ignore_are_refused(bad, message):
    """An option of another optimizer than the one chosen was ignored (exit 0, recorded as used)."""
    with pytest.raises(ConfigError, match=message):
        StyleConfig(**bad).validate()
    StyleConfig(**{**bad, "optimizer": "sgd" if "lr_decay" in bad else "lbfgs"}).validate()


def test_a_layer_named_twice_is_refused():
    # --content-layers relu1_1 relu1_1 counted the layer twice without a word.
    with pytest.raises(ConfigError, match="^--content-layers names relu1_1 more than once"):
        StyleConfig(content_layers=("relu1_1", "relu1_1")).validate()
    with pytest.raises(ConfigError, match="^--style-layers names relu2_1 more than once"):
        StyleConfig(style_layers=("relu1_1", "relu2_1", "relu2_1")).validate()
    for preset in PRESETS:  # (the presets name each layer once)
        StyleConfig(preset=preset).validate()


def test_blend_count_must_match_styles():
    with pytest.raises(ConfigError, match="one weight per style"):
        stylize_images(picture(0), [picture(1)], tiny(style_blend=(1.0, 2.0)))


def test_unknown_layer_fails_before_work():
    with pytest.raises(ConfigError, match="did you mean"):
        stylize_images(picture(0), [picture(1)], tiny(content_layers=("relu4_9",)))


def test_coarse_stage_dropped_when_a_style_would_be_too_thin_there():
    wide_style = picture(1, (256, 10))  # 64x2 at the finest stage below, 32x1 at the coarse one
    cfg = tiny(size=64, scales=2, iterations=2, content_layers=("relu1_1",), style_layers=("relu2_1",))
    result = stylize_images(picture(0, (64, 64)), [wide_style], cfg)
    assert result.stage_sizes == [(64, 64)]  # relu2_1 needs 2 px: the 32 px stage would give 1


def test_dropped_coarse_stage_keeps_full_iterations():
    wide = picture(0, (128, 32))
    cfg = tiny(size=64, scales=2, iterations=6)  # the 32x8 coarse stage is too thin for relu5_x
    result = stylize_images(wide, [picture(1)], cfg)
    assert result.stage_sizes == [(64, 16)] and len(result.history) == 6


def test_repeated_stage_sizes_merge_and_bad_counts_are_rejected():
    assert StyleConfig(size=32, scales=8).stage_sizes() == [16, 32]
    for bad in (dict(iterations=2.5), dict(size=True), dict(seed=-1), dict(seed=2**70),
                dict(lbfgs_history=10**6), dict(scales=99), dict(style_scale=100.0)):
        with pytest.raises(ConfigError):
            StyleConfig(**bad).validate()


def test_bf16_targets_match_iterates():
    """Under bf16 the style image scored against itself has (nearly) zero style loss: targets are
    computed in the same arithmetic as the iterates, and Grams in float32."""
    from convscope.optimize import precision_mode

    net = get_net("vgg19").use_channels_last(True)
    s = images.pil_to_tensor(picture(1))
    with precision_mode("bf16", s.device):
        obj = StyleObjective(net, s, [s], [1.0], tiny())
        terms = obj(s)
    assert terms["style"].item() < 1e-6 and terms["content"].item() < 1e-6
    assert obj.gram_targets["block1_conv1"].dtype == torch.float32


def test_bf16_runs_cast_the_vgg_weights_once(monkeypatch):
    """Under bf16 the engine's VGG holds bf16 weights (autocast would cast them every iteration)
    and the run matches one whose net autocast casts each time, iterate for iterate."""
    import convscope.style.gatys as gatys

    nets = []

    def spy(*args, **kw):
        nets.append(get_net(*args, **kw))
        return nets[-1]

    monkeypatch.setattr(gatys, "get_net", spy)
    cast = stylize_images(picture(0), [picture(1)], tiny(iterations=4, precision="bf16"))
    assert nets[-1].layers[0].weight.dtype == torch.bfloat16
    monkeypatch.setattr(nets[-1].__class__, "cast_layers", lambda self, dtype: self)
    autocast = stylize_images(picture(0), [picture(1)], tiny(iterations=4, precision="bf16"))
    assert nets[-1].layers[0].weight.dtype == torch.float32
    assert [h["loss"] for h in cast.history] == [h["loss"] for h in autocast.history]


@pytest.mark.parametrize("init", ["content", "image", "content, an init_image given"])
def test_first_step_from_an_image_moves_pixels_by_the_warm_start_bound(init, tmp_path):
    """From a start image (a one-pass result, an image file) the first L-BFGS step changes the
    largest-gradient pixel by WARM_START_FIRST_STEP; from the content it keeps torch's tiny step."""
    from convscope.optimize import WARM_START_FIRST_STEP

    start = picture(2, size=(48, 40))
    start.save(tmp_path / "start.png")
    seen = {}

    def grab(p):
        if p.image is not None:
            seen[p.iteration] = p.image

    config = tiny(iterations=2, save_every=1, precision="fp32",
                  init=str(tmp_path / "start.png") if init == "image" else "content")
    stylize_images(picture(0), [picture(1)], config, callback=grab,
                   init_image=start if init.startswith("content,") else None)  # init="content" wins
    x0 = images.pil_to_tensor(start if init == "image" else picture(0))
    moved = (seen[1] - x0).abs().max().item()
    if init == "image":
        # The callback's image is clamped to [0, 1]: a pixel pushed past the range moves less.
        assert WARM_START_FIRST_STEP - 2e-3 < moved <= WARM_START_FIRST_STEP + 1e-5
    else:
        assert moved < WARM_START_FIRST_STEP / 4  # min(1, 1/|g|₁): ~0.002 here, less on larger images


def test_empty_images_are_an_image_error():
    for content, style, what in ((Image.new("RGB", (0, 0)), picture(1), "content image"),
                                 (picture(0), Image.new("RGB", (5, 0)), "style image 1")):
        with pytest.raises(ImageError, match=f"{what} is empty"):
            stylize_images(content, [style], tiny())


def test_api_takes_one_style_tensors_and_pathlike_init(tmp_path):
    picture(1).save(tmp_path / "init.png")
    content = images.pil_to_tensor(picture(0))
    out = convscope.stylize(content[0], content, size=48, iterations=1, device="cpu",
                            style_layers="relu2_1", init=tmp_path / "init.png")
    assert out.size == (48, 40)
    # one layer given as a string is that layer, not its letters
    assert StyleConfig(style_layers="relu2_1").layers()[1] == ("relu2_1",)


@pytest.mark.parametrize("content, styles, kw, error, words", [
    (np.zeros((8, 8, 3), np.uint8), [picture(1)], {}, ImageError, "content must be .*fromarray"),
    (picture(0), [None], {}, ImageError, "style image 1 must be"),
    (picture(0), picture(1), {"config": {"size": 48}}, ConfigError, "config must be a StyleConfig"),
    (picture(0), picture(1), {"callback": 5}, ConfigError, "callback must be a function"),
])
def test_api_bad_arguments_are_one_line_user_errors(content, styles, kw, error, words):
    with pytest.raises(error, match=words) as info:
        convscope.stylize(content, styles, **{"size": 48, "iterations": 1, "device": "cpu", **kw})
    assert "\n" not in str(info.value)

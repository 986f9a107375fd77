"""The options each tab of the page shows: field names of the engines' config dataclasses (their
defaults, help and choices come from the dataclasses; `widgets` turns them into widgets, and a
form's values back into a config). Each tab's labels, from the same lists, name its fields in the
messages the tab shows (an engine's message names CLI flags: `widgets.in_form_terms`)."""

from __future__ import annotations

import re
from dataclasses import replace

from ..vis.configs_render import AUTO, FEATUREVIZ_AUTO_DEPTH
from .widgets import Spec, form_terms, labels_of

IMAGENET = "efficientnet_lite0"

# `init` and `net` are narrowed: a browser never names a file or a folder on the server.
GATYS_MAIN = [Spec("size", slider=(64, 1024, 32)), "iterations", "content_weight", "style_weight", "tv_weight",
              "preserve_color"]
GATYS_MORE = ["preset", "optimizer", "lr", "lr_decay",
              Spec("init", choices=("content", "noise", "style", "fast"),
                   help="start image: the content, noise, the style, or fast: the one-pass result of the built-in "
                        "arbitrary model for these styles, which the optimization then refines (far fewer "
                        "iterations reach a given style loss)"),
              "pooling", "style_scale", "scales", "seed", "tv_kind", "style_norm", "range_weight",
              "lbfgs_history", "content_layers", "style_layers", "style_layer_weights"]
BLEND = "style_blend"
FAST = ["size", Spec("strength", slider=(0, 1, 0.05)), Spec("alpha", slider=(0, 1, 0.05)), "style_size",
        "preserve_color"]
EXPLAIN_MAIN = [Spec("net", choices=(IMAGENET, "vgg19"),
                     help="network: efficientnet_lite0 (ImageNet classes) or vgg19 (no classifier: it explains "
                          "a channel)"), "target",
                Spec("rules", choices=("guided", "deconvnet", "gradient")),
                Spec("size", help="long side the image is resized to, in pixels (empty: the net's input "
                                  "size, at most 224)"), "cmap",
                Spec("alpha", slider=(0, 1, 0.05))]
EXPLAIN_MORE = ["layer", "channel", "cam_layer"]


def explain_main(runs=()) -> list:
    """EXPLAIN_MAIN with the trained runs the server offers (their labels, `serve --runs`) as nets too."""
    if not runs:
        return EXPLAIN_MAIN
    net = Spec("net", choices=(IMAGENET, "vgg19", *runs),
               help="network: efficientnet_lite0 (ImageNet classes), vgg19 (no classifier: it explains a "
                    "channel), or a trained run (its own classes, at its own input size)")
    return [net, *EXPLAIN_MAIN[1:]]


DREAM_MAIN = ["layer", "channel", Spec("octaves", slider=(1, 8, 1)), "steps", "lr",
              Spec("size", slider=(64, 1024, 32))]
DREAM_MORE = ["octave_scale", "jitter", "tile", "pooling", "seed"]
TEXTURE_MAIN = ["size", "iterations", "source_size", "tileable", "match_histogram"]
TEXTURE_MORE = ["layers", "layer_weights", "tv_weight", "range_weight", "optimizer", "warmup", "lr",
                "lbfgs_history", "pooling", "seed"]

# See inside. `net` is narrowed to the bundled nets (and the server's runs: `with_runs`): a browser
# never names a torchvision download or a folder. `layer` is free text with the net's layers
# suggested (the page fills them in as the net changes); device and precision are the server's.
RUNS_HELP = ", or a trained run (its own classes, at its own input size)"
_NETS = Spec("net", choices=("vgg19", IMAGENET),
             help="network: vgg19 (original ImageNet weights) or efficientnet_lite0 (ImageNet classes)")
_LAYER = Spec("layer", suggest=())
_RENDER_MORE = ["lr", "param", "fft_power", "decorrelate", "jitter", "scale", "rotate", "copies", "blur", "decay",
                "seed"]
CLASS = Spec("target_class", label="class")  # the CLI's --class
ACTIVATIONS_MAIN = [_NETS, _LAYER, "max_channels", "sort"]
ACTIVATIONS_MORE = ["size", "cmap", "shared_scale"]
FEATUREVIZ_MAIN = [_NETS, Spec("layer", suggest=(), help=f"layer by any name, or {AUTO}: the block output at "
                                                          f"{FEATUREVIZ_AUTO_DEPTH} of the depth of the net"),
                   "channels", CLASS, "steps", "size"]
FEATUREVIZ_MORE = ["neuron", "batch", *_RENDER_MORE]
CLASSVIZ_MAIN = [Spec("net", choices=(IMAGENET,), help="classifier: efficientnet_lite0 (ImageNet classes)"),
                 CLASS, "steps", "size"]
CLASSVIZ_MORE = _RENDER_MORE
INVERT_MAIN = [_LAYER, "size", "iterations"]
INVERT_MORE = [_NETS, "pooling", "optimizer", "lr", "alpha", "alpha_weight", "beta", "tv_weight", "seed"]


def with_runs(specs: list, runs=()) -> list:
    """`specs` with the trained runs the server offers (their labels, `serve --runs`) among the
    net's choices, and its help saying so."""
    if not runs:
        return specs
    return [replace(s, choices=(*s.choices, *runs), help=s.help + RUNS_HELP)
            if isinstance(s, Spec) and s.name == "net" else s for s in specs]


STYLIZE_LABELS = labels_of(GATYS_MAIN, GATYS_MORE, [BLEND], FAST)
EXPLAIN_LABELS = labels_of(EXPLAIN_MAIN, EXPLAIN_MORE)
DREAM_LABELS = labels_of(DREAM_MAIN, DREAM_MORE)
TEXTURE_LABELS = labels_of(TEXTURE_MAIN, TEXTURE_MORE)
# The engines name the target_class field by its CLI flag, --class.
ACTIVATIONS_LABELS = labels_of(ACTIVATIONS_MAIN, ACTIVATIONS_MORE)
FEATUREVIZ_LABELS = {**labels_of(FEATUREVIZ_MAIN, FEATUREVIZ_MORE), "class": CLASS.label}
CLASSVIZ_LABELS = {**labels_of(CLASSVIZ_MAIN, CLASSVIZ_MORE), "class": CLASS.label}
INVERT_LABELS = labels_of(INVERT_MAIN, INVERT_MORE)


# The nets' unknown-layer message ends with the CLI command that lists the layers; the page names
# its own list instead (form_terms alone made it "list them with: convscope layers net vgg19").
_CLI_LAYERS = re.compile(r"; list them with: convscope layers --net (.+)$")
PAGE_LAYERS = "; the layer box suggests them"


def page_terms(labels: dict[str, str], layer_box: bool = False):
    """form_terms(labels), with the CLI's hint for unknown layers replaced by the page's: the tab's
    own layer box where it suggests the net's layers (`layer_box`), else See inside's, which does."""
    def hint(m: re.Match) -> str:
        return PAGE_LAYERS if layer_box else f"; the layer boxes of See inside list the layers of {m.group(1)}"

    return form_terms(labels, lambda message: _CLI_LAYERS.sub(hint, message))

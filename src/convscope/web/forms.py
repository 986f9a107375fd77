"""The options each tab of the page shows: field names of the engines' config dataclasses (their
defaults, help and choices come from the dataclasses; `widgets` turns them into widgets, and a
form's values back into a config). Each tab's labels, from the same lists, name its fields in the
messages the tab shows (an engine's message names CLI flags: `widgets.in_form_terms`)."""

from __future__ import annotations

from .widgets import Spec, labels_of

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

STYLIZE_LABELS = labels_of(GATYS_MAIN, GATYS_MORE, [BLEND], FAST)
EXPLAIN_LABELS = labels_of(EXPLAIN_MAIN, EXPLAIN_MORE)
DREAM_LABELS = labels_of(DREAM_MAIN, DREAM_MORE)
TEXTURE_LABELS = labels_of(TEXTURE_MAIN, TEXTURE_MORE)

"""The page's See inside tab (app.py builds the page and its other tabs): a layer's feature maps,
feature visualization, class visualization and inversion, wired to `handlers_inside` the way
app.py wires the other tabs (the same queue, Stop and Cancel, API names and error display)."""

from __future__ import annotations

from . import forms
from .app import _api, _image_input, _result_image, _run_cancel, _run_stop_cancel, _shown_errors, pressed, \
    queues_on, withdrawn
from .handlers import Handlers
from .handlers_inside import InsideHandlers
from .widgets import make_widgets

DOWNLOAD = "Download PNG (its settings are in its metadata)"


def inside_tab(H: Handlers, inside: InsideHandlers, queued: dict, quick: dict) -> None:
    """The tab, inside the page's gr.Tabs; `queued` and `quick` are the page's event settings."""
    import gradio as gr

    with gr.Tab("See inside", id="inside", elem_id="tab-inside"):
        with gr.Tabs():
            with gr.Tab("Activations", id="activations"):
                _activations(H, inside, queued, quick)
            with gr.Tab("Feature visualization", id="featureviz"):
                _render(inside, "featureviz", queued, quick)
            with gr.Tab("Class visualization", id="classviz"):
                _render(inside, "classviz", queued, quick)
            with gr.Tab("Inversion", id="invert"):
                _invert(H, inside, queued, quick)


def _layers_follow_net(inside: InsideHandlers, widgets: dict, quick: dict, *extra: str) -> None:
    """A new net: the layer box suggests its layers, and starts again at auto (the last net's layer
    names may not exist on this one)."""
    import gradio as gr

    def suggest(net):
        return gr.update(choices=inside.layer_choices(net, *extra), value="auto")

    widgets["net"].change(_shown_errors()(suggest), widgets["net"], widgets["layer"], **quick)


def _fields(cls, main: list, more: list, kind: str, labels: dict) -> dict:
    """A form's fields: `main` shown, `more` under "More options" (ids prefixed with `kind`)."""
    import gradio as gr

    w = make_widgets(cls, main, f"{kind}-", labels)
    with gr.Accordion("More options", open=False):
        w.update(make_widgets(cls, more, f"{kind}-", labels))
    return w


def _activations(H: Handlers, inside: InsideHandlers, queued: dict, quick: dict) -> None:
    import gradio as gr

    from ..vis.configs import ALL_CONV, ActivationsConfig

    labels = forms.ACTIVATIONS_LABELS
    with gr.Row():
        with gr.Column():
            image = _image_input("Image", "activations-image")
            builtin = gr.Button("Use the built-in photo", size="sm")
            w = _fields(ActivationsConfig, inside.activations_specs, forms.ACTIVATIONS_MORE, "activations", labels)
            run, cancel = _run_cancel("activations", "Show feature maps")
        with gr.Column():
            figure = _result_image("Feature maps", "activations-figure")
            status = gr.Markdown(elem_id="activations-status")
            download = gr.File(label=DOWNLOAD, file_count="multiple", interactive=False,
                               elem_id="activations-download")
    builtin.click(_shown_errors()(H.builtin_photo), None, image, **quick)
    _layers_follow_net(inside, w, quick, ALL_CONV)
    names = list(w)

    def activations(img, *values):  # one forward pass: Cancel, no Stop
        yield from inside.activations(img, dict(zip(names, values)))

    event = run.click(_api(activations, ["image", *names], (1, 3)), [image, *w.values()], [figure, status, download],
                      api_name="activations", show_progress_on=figure, **queued)
    cancel.click(lambda: "cancelled", None, status, cancels=[event], **quick)


def _render(inside: InsideHandlers, kind: str, queued: dict, quick: dict) -> None:
    """Feature visualization (a sheet of channels or classes) or class visualization (one picture):
    no image in, progress in the status line, Stop keeps what it has so far."""
    import gradio as gr

    from ..vis.configs import ClassVizConfig, FeatureVizConfig

    if kind == "featureviz":
        cls, main, more, labels, handler = (FeatureVizConfig, inside.featureviz_specs, forms.FEATUREVIZ_MORE,
                                            forms.FEATUREVIZ_LABELS, inside.featureviz)
        text, shown = "Visualize", "Sheet: what each channel (or class) responds to"
    else:
        cls, main, more, labels, handler = (ClassVizConfig, inside.classviz_specs, forms.CLASSVIZ_MORE,
                                            forms.CLASSVIZ_LABELS, inside.classviz)
        text, shown = "Draw the class", "The class as the classifier sees it"
    with gr.Row():
        with gr.Column():
            w = _fields(cls, main, more, kind, labels)
            run, stop, cancel, switch = _run_stop_cancel(kind, text)
        with gr.Column():
            result = _result_image(shown, f"{kind}-result")
            status = gr.Markdown(elem_id=f"{kind}-status")
            download = gr.File(label=DOWNLOAD, interactive=False, elem_id=f"{kind}-download")
    if "layer" in w:
        _layers_follow_net(inside, w, quick)
    names = list(w)

    def render(sw, *values):
        with sw.running():
            yield from handler(dict(zip(names, values)), sw)

    args = ["stop", *names]  # as the inputs (the State's name stays out of the API)
    event = run.click(_api(render, args, (1, 3)), [switch, *w.values()], [result, status, download],
                      api_name=kind, show_progress_on=result, validator=queues_on(args.index("stop")), **queued)
    stop.click(pressed, switch, status, **quick)
    cancel.click(withdrawn, switch, status, cancels=[event], **quick)


def _invert(H: Handlers, inside: InsideHandlers, queued: dict, quick: dict) -> None:
    import gradio as gr

    from ..vis.configs import InvertConfig

    labels = forms.INVERT_LABELS
    with gr.Row():
        with gr.Column():
            image = _image_input("Image", "invert-image")
            builtin = gr.Button("Use the built-in photo", size="sm")
            w = _fields(InvertConfig, inside.invert_specs, forms.INVERT_MORE, "invert", labels)
            run, stop, cancel, switch = _run_stop_cancel("invert", "Reconstruct")
        with gr.Column():
            result = _result_image("Reconstruction (live preview)", "invert-result")
            status = gr.Markdown(elem_id="invert-status")
            download = gr.File(label=DOWNLOAD, interactive=False, elem_id="invert-download")
    builtin.click(_shown_errors()(H.builtin_photo), None, image, **quick)
    _layers_follow_net(inside, w, quick)
    names = list(w)

    def invert(img, sw, *values):
        with sw.running():
            yield from inside.invert(img, dict(zip(names, values)), sw)

    args = ["image", "stop", *names]
    event = run.click(_api(invert, args, (1, 3)), [image, switch, *w.values()], [result, status, download],
                      api_name="invert", show_progress_on=result, validator=queues_on(args.index("stop")), **queued)
    stop.click(pressed, switch, status, **quick)
    cancel.click(withdrawn, switch, status, cancels=[event], **quick)

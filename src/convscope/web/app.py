"""The Gradio page: five tabs (Stylize, Classify, Explain, Dream & textures wired to `handlers`, and
See inside, built by `app_inside` and wired to `handlers_inside`).

Every long job goes through Gradio's queue under one concurrency id ("device"), so at most
`concurrency` jobs use the device at once and the rest wait their turn; each tab's Cancel button
cancels its job (queued or running), and the tabs that optimize an image have a Stop button that
ends the running job with its best image so far (as Ctrl-C does on the command line), or a queued
one before it starts. A user's mistake (a UserError) shows as its one-line message, never a
traceback; anything else is logged on the server and shown as a one-line internal error.
"""

from __future__ import annotations

import functools
import sys
import traceback

from ..errors import UserError
from . import forms
from .handlers import SKIP, Handlers, Settings
from .jobs import Cancelled, StopSwitch
from .widgets import make_widget, make_widgets

TITLE = "convscope"
QUEUE_SIZE = 100            # jobs waiting at most (beyond that a request is refused with a message)
DELETE_CACHE = (900, 3600)  # Gradio's cached uploads and results: swept every 15 min, kept 1 h


def one_line(exc: BaseException) -> str:
    """The message shown for a failed job (errors a user can cause say what to do)."""
    if isinstance(exc, UserError):
        return str(exc)
    text = str(exc).lower()
    if isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text:
        return "the device ran out of memory; use a smaller size"
    return f"internal error ({type(exc).__name__}); the server log has the details"


def _gradio_values(values):
    import gradio as gr

    return tuple(gr.skip() if v is SKIP else v for v in values)


def _shown_errors(status: tuple[int, int] | None = None):
    """Wrap a handler (plain or generator) so its outputs map SKIP to gr.skip() and every failure
    becomes gr.Error with one line; with `status` = (index of the status output, number of
    outputs), a generator's status output shows the message too."""
    import gradio as gr

    def wrap(fn):
        def fail(exc):
            if not isinstance(exc, (UserError, Cancelled)) and not getattr(exc, "logged", False):
                print("convscope serve: a request failed:\n" + "".join(traceback.format_exception(exc)),
                      file=sys.stderr)
            return gr.Error((str(exc) or "cancelled") if isinstance(exc, Cancelled) else one_line(exc),
                            print_exception=False)

        @functools.wraps(fn)
        def plain(*args):
            try:
                out = fn(*args)
            except Exception as exc:  # noqa: BLE001 (every failure is shown as one line)
                raise fail(exc) from None
            return _gradio_values(out) if isinstance(out, tuple) else out

        @functools.wraps(fn)
        def generator(*args):
            try:
                for out in fn(*args):
                    yield _gradio_values(out)
            except Exception as exc:  # noqa: BLE001
                error = fail(exc)
                if status is not None:
                    shown = [gr.skip()] * status[1]
                    shown[status[0]] = f"**error:** {error.message}"
                    yield tuple(shown)
                raise error from None

        import inspect

        return generator if inspect.isgeneratorfunction(fn) else plain

    return wrap


def _api(fn, names: list[str], status: tuple[int, int] | None = None):
    """`fn` (taking the inputs positionally) with errors shown and an API signature that names each
    input, so a client can call e.g. /stylize with method=..., size=... (Gradio reads the names
    from the signature; inputs left out take the form's defaults, or None where the form is empty)."""
    import inspect

    wrapped = _shown_errors(status)(fn)
    wrapped.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for n in names])
    return wrapped


def _image_input(label: str, elem_id: str):
    import gradio as gr

    # type=filepath with preprocess=False on the events: the handler gets Gradio's file record and
    # checks it itself (limits.check_upload); format=png keeps built-in samples lossless.
    return gr.Image(label=label, type="filepath", image_mode=None, sources=["upload", "clipboard"],
                    format="png", height=260, elem_id=elem_id)


def _result_image(label: str, elem_id: str):
    import gradio as gr

    return gr.Image(label=label, format="png", interactive=False, height=420, elem_id=elem_id)


def _run_cancel(prefix: str, text: str):
    import gradio as gr

    with gr.Row():
        run = gr.Button(text, variant="primary", elem_id=f"{prefix}-run")
        cancel = gr.Button("Cancel", variant="stop", elem_id=f"{prefix}-cancel")
    return run, cancel


def _run_stop_cancel(prefix: str, text: str):
    """Run, Stop (keep the image so far) and Cancel buttons, and the tab's StopSwitch for each
    browser session (a gr.State built per session from the class)."""
    import gradio as gr

    with gr.Row():
        run = gr.Button(text, variant="primary", elem_id=f"{prefix}-run")
        stop = gr.Button("Stop", variant="secondary", elem_id=f"{prefix}-stop")
        cancel = gr.Button("Cancel", variant="stop", elem_id=f"{prefix}-cancel")
    return run, stop, cancel, gr.State(StopSwitch)


def pressed(switch: StopSwitch):
    """The Stop button: the status says the job will stop (nothing changes when none is queued or
    running)."""
    import gradio as gr

    return {"running": "stopping: the image so far comes next...",
            "queued": "stopping: the job will end before it starts"}.get(switch.press(), gr.skip())


def withdrawn(switch: StopSwitch) -> str:
    """The Cancel button of a tab with a Stop button (Gradio drops the job itself)."""
    switch.withdraw()
    return "cancelled"


def queues_on(switch_at: int):
    """The validator of a job event with a StopSwitch among its inputs (at index `switch_at`): Gradio
    runs it on the server as it queues the job, and only for a job the queue takes, so the switch
    knows from then on that a job waits, and a Stop pressed before the job starts reaches it. (A
    quick event chained before the job would also run for a Run click that Gradio ignores because
    the tab's job is still pending, marking a job that was never queued.)"""
    import gradio as gr

    def validator(*values):
        values[switch_at].submit()
        return [gr.validate(True, "")] * len(values)

    return validator


def stylize_parts_shown(method: str) -> tuple[bool, ...]:
    """Which parts of the Stylize form `method` uses, in the order: gatys options, one-pass options,
    style image, its built-in button, second style, strength (a style model's), alpha and style size
    (arbitrary's), the Stop button (an optimization's). A built-in style has its painting inside: no
    style images."""
    gatys, arbitrary = method == "gatys", method == "arbitrary"
    model = not gatys and not arbitrary
    return gatys, not gatys, not model, not model, not model, model, arbitrary, arbitrary, gatys


def build_app(settings: Settings):
    """The Blocks app, its queue configured. Its `convscope_handlers` attribute is the Handlers: call
    its cleanup() when the server stops."""
    import gradio as gr

    H = Handlers(settings)
    queued = {"concurrency_limit": settings.concurrency, "concurrency_id": "device", "preprocess": False,
              "show_progress": "minimal"}
    quick = {"queue": False, "api_visibility": "private"}  # instant page actions, not in the API

    with gr.Blocks(title=TITLE, delete_cache=DELETE_CACHE, analytics_enabled=False) as demo:
        lim = settings.limits
        gr.Markdown(f"# convscope\nStylize images, classify them, and see inside CNNs. Uploads: image files "
                    f"only, at most {lim.max_mb:g} MB and {lim.max_pixels / 1e6:g} megapixels each. "
                    f"Jobs run {settings.concurrency} at a time; others wait in the queue.")
        with gr.Tabs():
            # ---- Stylize ----------------------------------------------------------------------
            with gr.Tab("Stylize", id="stylize", elem_id="tab-stylize"):
                from ..fast.apply import FastConfig
                from ..style.config import StyleConfig

                with gr.Row():
                    with gr.Column():
                        content = _image_input("Content image", "stylize-content")
                        content_builtin = gr.Button("Use the built-in photo", size="sm")
                        style1 = _image_input("Style image", "stylize-style")
                        style_builtin = gr.Button("Use the built-in swirl painting", size="sm")
                        with gr.Accordion("Second style image (blend two styles)", open=False) as style2_box:
                            style2 = _image_input("Second style image", "stylize-style2")
                            blend = make_widget(StyleConfig, forms.BLEND, "stylize-", forms.STYLIZE_LABELS)
                        methods = H.methods()
                        method = gr.Dropdown(choices=[(label, value) for value, label in methods.items()],
                                             value="gatys", label="method", elem_id="stylize-method")
                        with gr.Group(visible=True) as gatys_box:
                            gatys = make_widgets(StyleConfig, forms.GATYS_MAIN, "gatys-", forms.STYLIZE_LABELS)
                            with gr.Accordion("More options", open=False):
                                gatys.update(make_widgets(StyleConfig, forms.GATYS_MORE, "gatys-",
                                                          forms.STYLIZE_LABELS))
                        with gr.Group(visible=False) as fast_box:
                            fast = make_widgets(FastConfig, forms.FAST, "fast-", forms.STYLIZE_LABELS)
                        run, stop, cancel, switch = _run_stop_cancel("stylize", "Stylize")
                    with gr.Column():
                        result = _result_image("Result (live preview)", "stylize-result")
                        status = gr.Markdown(elem_id="stylize-status")
                        download = gr.File(label="Download PNG (its settings are in its metadata)",
                                           interactive=False, elem_id="stylize-download")

                content_builtin.click(_shown_errors()(H.builtin_photo), None, content, **quick)
                style_builtin.click(_shown_errors()(H.builtin_style), None, style1, **quick)
                shown_parts = [gatys_box, fast_box, style1, style_builtin, style2_box, fast["strength"],
                               fast["alpha"], fast["style_size"], stop]
                method.change(lambda m: [gr.update(visible=v) for v in stylize_parts_shown(m)], method,
                              shown_parts, **quick)
                gatys_names, fast_names = list(gatys), list(fast)

                def stylize(m, c, s1, s2, b, sw, *values):
                    g = dict(zip(gatys_names, values[:len(gatys_names)]))
                    f = dict(zip(fast_names, values[len(gatys_names):]))
                    with sw.running():
                        yield from H.stylize(m, c, s1, s2, b, g, f, sw)

                # The State's name stays out of the API (Gradio fills it from the session).
                names = ["method", "content", "style", "style2", forms.BLEND, "stop", *gatys_names,
                         *(f"fast_{n}" for n in fast_names)]
                event = run.click(_api(stylize, names, (1, 3)),
                                  [method, content, style1, style2, blend, switch, *gatys.values(), *fast.values()],
                                  [result, status, download], api_name="stylize", show_progress_on=result,
                                  validator=queues_on(names.index("stop")), **queued)
                stop.click(pressed, switch, status, **quick)
                cancel.click(withdrawn, switch, status, cancels=[event], **quick)

            # ---- Classify ---------------------------------------------------------------------
            with gr.Tab("Classify", id="classify", elem_id="tab-classify"):
                with gr.Row():
                    with gr.Column():
                        files = gr.File(label="Images", file_count="multiple", file_types=["image"],
                                        elem_id="classify-files")
                        photo = gr.Button("Use the built-in photo", size="sm")
                        models = H.models()
                        model = gr.Dropdown(choices=[(label, value) for value, label in models.items()],
                                            value=forms.IMAGENET, label="model", elem_id="classify-model",
                                            info="ImageNet top 5 with EfficientNet-Lite0" + (
                                                ", or one of the trained runs this server offers"
                                                if H.runs else ""))
                        run_c = gr.Button("Classify", variant="primary", elem_id="classify-run")
                    with gr.Column():
                        label = gr.Label(num_top_classes=5, label="Top 5 (first image)", elem_id="classify-label")
                        chart = _result_image("Probabilities", "classify-chart")
                        table = gr.Markdown(elem_id="classify-table")
                photo.click(_shown_errors()(lambda: [H.builtin_photo_file()]), None, files, **quick)
                run_c.click(_api(H.classify, ["images", "model"]), [files, model], [label, chart, table],
                            api_name="classify", show_progress_on=chart, **queued)

            # ---- Explain ----------------------------------------------------------------------
            with gr.Tab("Explain", id="explain", elem_id="tab-explain"):
                from ..vis.explain import ExplainConfig

                with gr.Row():
                    with gr.Column():
                        ex_image = _image_input("Image", "explain-image")
                        ex_builtin = gr.Button("Use the built-in photo", size="sm")
                        ex = make_widgets(ExplainConfig, H.explain_specs, "explain-", forms.EXPLAIN_LABELS)
                        with gr.Accordion("Explain a channel instead; Grad-CAM layer", open=False):
                            ex.update(make_widgets(ExplainConfig, forms.EXPLAIN_MORE, "explain-", forms.EXPLAIN_LABELS))
                        run_e, cancel_e = _run_cancel("explain", "Explain")
                    with gr.Column():
                        ex_figure = _result_image("Explanation", "explain-figure")
                        ex_status = gr.Markdown(elem_id="explain-status")
                        ex_gallery = gr.Gallery(label="Views", columns=3, format="png", elem_id="explain-views")
                        ex_top = gr.Label(num_top_classes=5, label="Top 5", elem_id="explain-top")
                ex_builtin.click(_shown_errors()(H.builtin_photo), None, ex_image, **quick)
                ex_names = list(ex)

                def explain(img, *values):
                    yield from H.explain(img, dict(zip(ex_names, values)))

                event_e = run_e.click(_api(explain, ["image", *ex_names], (3, 4)), [ex_image, *ex.values()],
                                      [ex_figure, ex_gallery, ex_top, ex_status], api_name="explain",
                                      show_progress_on=ex_figure, **queued)
                cancel_e.click(lambda: "cancelled", None, ex_status, cancels=[event_e], **quick)

            # ---- Dream & textures -------------------------------------------------------------
            with gr.Tab("Dream & textures", id="dream", elem_id="tab-dream"):
                from ..vis.dream import DreamConfig
                from ..vis.texture import TextureConfig

                with gr.Tabs():
                    with gr.Tab("DeepDream", id="deepdream"):
                        with gr.Row():
                            with gr.Column():
                                d_image = _image_input("Image", "dream-image")
                                d_builtin = gr.Button("Use the built-in photo", size="sm")
                                dw = make_widgets(DreamConfig, forms.DREAM_MAIN, "dream-", forms.DREAM_LABELS)
                                with gr.Accordion("More options", open=False):
                                    dw.update(make_widgets(DreamConfig, forms.DREAM_MORE, "dream-", forms.DREAM_LABELS))
                                run_d, stop_d, cancel_d, switch_d = _run_stop_cancel("dream", "Dream")
                            with gr.Column():
                                d_result = _result_image("Dream", "dream-result")
                                d_status = gr.Markdown(elem_id="dream-status")
                                d_download = gr.File(label="Download PNG (its settings are in its metadata)",
                                                     interactive=False, elem_id="dream-download")
                    with gr.Tab("Texture synthesis", id="texture"):
                        with gr.Row():
                            with gr.Column():
                                t_image = _image_input("Source texture", "texture-source")
                                t_builtin = gr.Button("Use the built-in swirl painting", size="sm")
                                tw = make_widgets(TextureConfig, forms.TEXTURE_MAIN, "texture-", forms.TEXTURE_LABELS)
                                with gr.Accordion("More options", open=False):
                                    tw.update(make_widgets(TextureConfig, forms.TEXTURE_MORE, "texture-",
                                                           forms.TEXTURE_LABELS))
                                run_t, stop_t, cancel_t, switch_t = _run_stop_cancel("texture", "Synthesize")
                            with gr.Column():
                                t_result = _result_image("Texture (live preview)", "texture-result")
                                t_status = gr.Markdown(elem_id="texture-status")
                                t_download = gr.File(label="Download PNG (its settings are in its metadata)",
                                                     interactive=False, elem_id="texture-download")
                d_builtin.click(_shown_errors()(H.builtin_photo), None, d_image, **quick)
                t_builtin.click(_shown_errors()(H.builtin_style), None, t_image, **quick)
                d_names, t_names = list(dw), list(tw)

                def dream(img, sw, *values):
                    with sw.running():
                        yield from H.dream(img, dict(zip(d_names, values)), sw)

                def texture(img, sw, *values):
                    with sw.running():
                        yield from H.texture(img, dict(zip(t_names, values)), sw)

                d_args, t_args = ["image", "stop", *d_names], ["source", "stop", *t_names]  # as the inputs
                event_d = run_d.click(_api(dream, d_args, (1, 3)),
                                      [d_image, switch_d, *dw.values()], [d_result, d_status, d_download],
                                      api_name="dream", show_progress_on=d_result,
                                      validator=queues_on(d_args.index("stop")), **queued)
                stop_d.click(pressed, switch_d, d_status, **quick)
                cancel_d.click(withdrawn, switch_d, d_status, cancels=[event_d], **quick)
                event_t = run_t.click(_api(texture, t_args, (1, 3)),
                                      [t_image, switch_t, *tw.values()], [t_result, t_status, t_download],
                                      api_name="texture", show_progress_on=t_result,
                                      validator=queues_on(t_args.index("stop")),
                                      **queued)
                stop_t.click(pressed, switch_t, t_status, **quick)
                cancel_t.click(withdrawn, switch_t, t_status, cancels=[event_t], **quick)

            # ---- See inside ---------------------------------------------------------------------
            from .app_inside import inside_tab  # (it builds on this module's pieces)
            from .handlers_inside import InsideHandlers

            inside_tab(H, InsideHandlers(H), queued, quick)

    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=settings.concurrency)
    demo.convscope_handlers = H
    return demo

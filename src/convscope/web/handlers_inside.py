"""What the See inside tab does: a layer's feature maps (one forward pass), feature and class
visualization (optimizations, with Stop), and inversion (an optimization with a live preview and Stop).

The same rules as `handlers`, whose shared pieces these use (settings, device slots, loaded nets,
the temp folder): no Gradio here; the browser's raw values in, plain values out in the order of the
tab's outputs; every job through `jobs.stream`; each job's downloads in its own folder, removed once
the page has its copy.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import replace

from PIL import Image

from ..errors import ConfigError
from ..optimize import Interrupted
from . import jobs
from .forms import (ACTIVATIONS_LABELS, ACTIVATIONS_MAIN, ACTIVATIONS_MORE, CLASSVIZ_LABELS, CLASSVIZ_MAIN,
                    CLASSVIZ_MORE, FEATUREVIZ_LABELS, FEATUREVIZ_MAIN, FEATUREVIZ_MORE, INVERT_LABELS, INVERT_MAIN,
                    INVERT_MORE, page_terms, with_runs)
from .handlers import SKIP, Handlers, _offered, _stopped_at, preview_every
from .limits import check_upload, display_name
from .widgets import Spec, build_config, default_of, field_of

class InsideHandlers:
    """The See inside tab's actions, on the shared pieces of the page's `Handlers`."""

    def __init__(self, base: Handlers):
        from ..vis.configs import ALL_CONV, ActivationsConfig, FeatureVizConfig, InvertConfig

        self.base = base
        self.limits = base.limits
        self._layers: dict[str, list[str]] = {}
        self._layers_lock = threading.Lock()
        runs = list(base.runs)
        # Each form's net offers the server's runs too (inversion loads its net by name: not a run);
        # its layer box suggests the layers of the net the form starts with.
        self.activations_specs = self._suggesting(with_runs(ACTIVATIONS_MAIN, runs), ActivationsConfig, ALL_CONV)
        self.featureviz_specs = self._suggesting(with_runs(FEATUREVIZ_MAIN, runs), FeatureVizConfig)
        self.classviz_specs = with_runs(CLASSVIZ_MAIN, runs)
        self.invert_specs = self._suggesting(INVERT_MAIN, InvertConfig)

    # ---- the layer box -------------------------------------------------------------------------
    def _suggesting(self, specs: list, cls, *extra: str) -> list:
        """`specs` with the layer box suggesting the layers of `cls`'s default net (the form's)."""
        net = default_of(field_of(cls, "net"))
        return [replace(s, suggest=tuple(self.layer_choices(net, *extra)))
                if isinstance(s, Spec) and s.name == "layer" else s for s in specs]

    def nets(self) -> dict[str, str]:
        """Every net a See inside form offers (value -> value), for checking a browser's choice."""
        from .forms import IMAGENET

        return {n: n for n in ("vgg19", IMAGENET, *self.base.runs)}

    def layer_choices(self, net: str, *extra: str) -> list[str]:
        """What the layer box suggests for `net`: auto, `extra` (all-conv for feature maps), then
        the net's layers with a spatial grid, in order (canonical names; aliases are typed)."""
        from ..nets import AUTO, layer_table

        _offered(net, self.nets(), "net")
        with self._layers_lock:
            if net not in self._layers:  # a registered net's list needs no weights; a run is loaded
                rows = self.base.net(net).layer_table() if net in self.base.runs else layer_table(net)
                self._layers[net] = [r["name"] for r in rows if r["stride"] is not None]
        return [AUTO, *extra, *self._layers[net]]

    def _config(self, cls, specs: list, options: dict):
        return build_config(cls, specs, options, {"device": self.base.settings.device})

    # ---- Activations ---------------------------------------------------------------------------
    @page_terms(ACTIVATIONS_LABELS, layer_box=True)
    def activations(self, record, options: dict) -> Iterator[tuple]:
        """Yields (figure, status, download paths): the CLI's grid figure of the layer (all-conv: one
        per block, shown one above the other), each download a PNG with its settings in its metadata."""
        from ..vis.activations import DEFAULT_SIZE, activations, figure_metadata, figure_pixels, layer_figure
        from ..vis.configs import ActivationsConfig

        image = check_upload(record, self.limits)
        config = self._config(ActivationsConfig, self.activations_specs + ACTIVATIONS_MORE, options).validate()
        self.limits.check_output(image.size, config.size or DEFAULT_SIZE)
        name = display_name(record)

        def work(job: jobs.Job):
            net = self.base.net(config.net)
            job.check()
            result = activations(image, config, net=net)
            job.check()
            # A panel per channel shown: 512 channels drew 10 megapixels (all-conv: a figure per block);
            # measured before drawing, which took 17 s and 1.2 GB for all-conv at 512.
            pixels = sum(figure_pixels(result, la) for la in result.layers)
            if pixels > self.limits.max_pixels:
                raise ConfigError(f"the feature maps come to {pixels:,} pixels, over this server's limit of "
                                  f"{self.limits.max_pixels:,}; use a smaller max channels")
            return result, [layer_figure(result, la) for la in result.layers]

        yield SKIP, "running the image through the network...", None
        folder = self.base._job_dir()
        try:
            for item in jobs.stream(work, self.base.slots):
                if isinstance(item, tuple):
                    result, figures = item[1]
                    many = len(figures) > 1
                    paths = [self.base._save(figure, folder,
                                             f"activations_{la.canonical}.png" if many else "activations.png",
                                             figure_metadata(result, la, input=name))
                             for la, figure in zip(result.layers, figures)]
                    yield stacked(figures) if many else paths[0], activations_status(result), paths
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # ---- Feature and class visualization -------------------------------------------------------
    @page_terms(FEATUREVIZ_LABELS, layer_box=True)
    def featureviz(self, options: dict, switch: jobs.StopSwitch | None = None) -> Iterator[tuple]:
        """Yields (sheet, status, download path): the CLI's contact sheet, one panel per channel or
        class; `switch` stops it early, keeping the sheet so far (as Ctrl-C does)."""
        from ..vis.configs import FeatureVizConfig

        yield from self._render(self._config(FeatureVizConfig, self.featureviz_specs + FEATUREVIZ_MORE, options),
                                switch)

    @page_terms(CLASSVIZ_LABELS, layer_box=True)
    def classviz(self, options: dict, switch: jobs.StopSwitch | None = None) -> Iterator[tuple]:
        """Yields (picture, status, download path): one class as the classifier sees it; `switch`
        stops it early, keeping the picture so far."""
        from ..vis.configs import ClassVizConfig

        yield from self._render(self._config(ClassVizConfig, self.classviz_specs + CLASSVIZ_MORE, options), switch)

    def _render(self, config, switch: jobs.StopSwitch | None) -> Iterator[tuple]:
        from ..runinfo import run_metadata
        from ..vis.configs import ClassVizConfig
        from ..vis.featureviz import FeatureVisualizer
        from ..vis.featureviz_sheet import picture_metadata, sheet, sheet_metadata

        config = config.validate()
        picture = isinstance(config, ClassVizConfig)  # classviz: the picture itself, not a sheet
        filename = "classviz.png" if picture else "featureviz.png"
        if config.size is not None:
            self.limits.check_output((config.size, config.size), config.size)

        def work(job: jobs.Job):
            net = self.base.net(config.net)
            job.check()
            viz = FeatureVisualizer(config, net)  # the layer, channels and classes are checked here
            self._check_panels(viz.config, len(viz.targets))
            job.check()
            result = viz.run(job.callback)
            return result, (result.image(0) if picture else sheet(result)), net.classes

        yield SKIP, "loading the network...", None
        folder = self.base._job_dir()
        try:
            for item in jobs.stream(work, self.base.slots, switch=switch):
                if isinstance(item, jobs.Tick):
                    yield SKIP, render_status(item), SKIP
                else:
                    result, shown, classes = item[1]
                    meta = picture_metadata(result, classes) if picture else sheet_metadata(result)
                    path = self.base._save(shown, folder, filename, meta)
                    yield shown, f"done in {result.seconds:.1f} s: {render_summary(result)}", path
        except Interrupted as stop:
            partial = stop.partial
            if picture:  # as the CLI's classviz (RunOutputs) records a stopped run
                shown = partial.image(0)
                meta = run_metadata("classviz", (stop.config or config).to_dict(), seed=config.seed,
                                    inputs={"class": str(config.target_class)}, interrupted_at=_stopped_at(stop))
                what = f"the picture so far, {shown.width}x{shown.height}"
            else:  # as the CLI's featureviz records a stopped run
                shown = sheet(partial)
                meta = sheet_metadata(partial, interrupted_at={"stage": stop.stage, "step": stop.iteration})
                what = f"the sheet so far, {len(partial.targets)} panel(s)"
            path = self.base._save(shown, folder, filename, meta)
            yield shown, f"stopped at step {stop.iteration} of batch {stop.stage}: {what}", path
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _check_panels(self, config, panels: int) -> None:
        """Refuse more pixels than the server's cap: every panel's image and its transformed copies."""
        pixels = panels * config.copies * config.size ** 2
        if pixels > self.limits.max_pixels:
            raise ConfigError(f"{panels} panel(s) x {config.copies} cop(ies) of {config.size}x{config.size} px are "
                              f"{pixels:,} pixels, over this server's limit of {self.limits.max_pixels:,}; use a "
                              "smaller size, fewer channels or classes, or fewer copies")

    # ---- Inversion -----------------------------------------------------------------------------
    @page_terms(INVERT_LABELS, layer_box=True)
    def invert(self, record, options: dict, switch: jobs.StopSwitch | None = None) -> Iterator[tuple]:
        """Yields (preview, status, download path): the reconstruction as it forms, then the best
        one with its representation error; `switch` stops it early, keeping the best so far."""
        from ..runinfo import run_metadata
        from ..vis.configs import InvertConfig
        from ..vis.invert import DEFAULT_SIZE, invert, results_metadata

        image = check_upload(record, self.limits)
        config = self._config(InvertConfig, self.invert_specs + INVERT_MORE, options)
        config = replace(config, save_every=preview_every(config.iterations)).validate()
        self.limits.check_output(image.size, config.size or DEFAULT_SIZE)
        names = {"image": display_name(record)}

        def work(job: jobs.Job):
            return invert(image, config, job.callback)[0]

        yield SKIP, "loading the network...", None
        yield from self.base._optimization(
            work, "inversion.png", lambda r: results_metadata([r], names), switch,
            lambda stop: run_metadata("invert", (stop.config or config).to_dict(), inputs=names, seed=config.seed,
                                      interrupted_at=_stopped_at(stop)),
            summary=lambda r: f"{r.layer}: representation error {r.error:.4g}",
            kept=lambda stop: f"the best reconstruction so far (representation error {stop.results[-1].error:.4g})")


def stacked(figures: list[Image.Image]) -> Image.Image:
    """Figures one above the other, centred on white (all-conv's one figure per block)."""
    out = Image.new("RGB", (max(f.width for f in figures), sum(f.height for f in figures)), "white")
    y = 0
    for f in figures:
        out.paste(f, ((out.width - f.width) // 2, y))
        y += f.height
    return out


def activations_status(result) -> str:
    """'done in 0.31 s: relu3_1 256x56x75, 64 of 256 channels shown (by mean activation)'"""
    c = result.config
    order = "by channel index" if c.sort == "index" else f"by {c.sort} activation"
    layers = "; ".join(f"{la.name} {'x'.join(map(str, la.shape))}, {min(la.shape[0], c.max_channels)} of "
                       f"{la.shape[0]} channels shown" for la in result.layers)
    return f"done in {result.seconds:.2f} s: {layers} ({order})"


def render_status(tick: jobs.Tick) -> str:
    """'batch 1/2 · step 12/64 · activation 3.21 · 4 s · ETA 18 s' (the objective grows)."""
    p = tick.progress
    parts = [f"batch {p.stage}/{p.stages}"] if p.stages > 1 else []
    parts.append(f"step {p.iteration}/{p.iterations}")
    parts += [f"{term} {value:.4g}" for term, value in p.terms.items()]
    parts.append(f"{p.elapsed:.0f} s")
    if tick.eta is not None:
        parts.append(f"ETA {tick.eta:.0f} s")
    return " · ".join(parts)


def render_summary(result) -> str:
    """A finished feature or class visualization in a line."""
    size = f"{result.config.size}x{result.config.size}"
    if result.kind == "class" and len(result.targets) == 1:
        return (f"class {result.labels[0]}, {size}: logit {result.initial[0]:.3g} -> {result.final[0]:.3g}, "
                f"probability {result.probabilities[0]:.1%}")
    (_, start_value), (what, value) = result.losses.items()
    return f"{len(result.targets)} panel(s) of {size} px; {what} {start_value:.3g} -> {value:.3g} on average"

"""What each tab does when its button is pressed: check the uploads, build the engine's config from
the form (its fields: `forms`), run the engine (through `jobs.stream`), and turn results into what
the page shows.

No Gradio here: handlers take the browser's raw values (file records, numbers, text) and yield
tuples of plain values (PIL images, text, file paths) in the order of the tab's outputs. The page
(app.py) wires them to widgets and turns a UserError into the one-line message it shows.
"""

from __future__ import annotations

import copy
import math
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image

from .. import images
from ..errors import ConfigError
from ..optimize import Interrupted
from . import jobs
from .charts import probability_chart, thumbnail
from .forms import (BLEND, DREAM_LABELS, DREAM_MAIN, DREAM_MORE, EXPLAIN_LABELS, EXPLAIN_MORE, FAST, GATYS_MAIN,
                    GATYS_MORE, IMAGENET, STYLIZE_LABELS, TEXTURE_LABELS, TEXTURE_MAIN, TEXTURE_MORE, explain_main,
                    page_terms)
from .limits import Limits, check_upload, display_name, probe_upload
from .runs import find_runs, load_run_net
from .widgets import build_config, parse_value

MAX_CLASSIFY = 16          # images per classify request
PREVIEWS = 20              # live previews per optimization run (about)
BUILTIN_PHOTO = "grace_hopper.jpg"
BUILTIN_STYLE = "swirl_painting.png"


@dataclass
class Settings:
    limits: Limits
    concurrency: int = 1
    runs: Path | None = None     # folder searched for trained classifier runs
    device: str = "auto"


def preview_every(iterations: int) -> int:
    """Every how many iterations a preview image is sent: about PREVIEWS per run."""
    return max(1, math.ceil(iterations / PREVIEWS))


class Handlers:
    """The tabs' actions, sharing the settings, the device slots, loaded nets and a temp folder."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.limits = settings.limits
        self.slots = jobs.DeviceSlots(settings.concurrency)
        self.runs = find_runs(settings.runs)
        self.explain_specs = explain_main(list(self.runs))  # the Explain form: runs are nets there too
        self.tmp = Path(tempfile.mkdtemp(prefix="convscope-web-"))
        self._nets: dict[str, object] = {}
        self._nets_lock = threading.Lock()

    def cleanup(self) -> None:
        """Remove the temp folder (downloads not yet fetched, built-in sample copies)."""
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- shared pieces ---------------------------------------------------------------------
    def device(self):
        from ..devices import resolve_device

        return resolve_device(self.settings.device)

    def net(self, name: str):
        """A loaded net (the ImageNet net, VGG19, trained runs), loaded once and kept; each job gets
        its own copy, as get_net gives: with --concurrency above 1, two jobs on one net would add
        their hooks to each other's passes, and featureviz changes its net's memory format."""
        with self._nets_lock:
            if name not in self._nets:
                from ..nets import get_net

                if name in self.runs:
                    self._nets[name] = load_run_net(name, self.runs[name], self.device())
                else:
                    self._nets[name] = get_net(name, "max", self.device())
            return copy.deepcopy(self._nets[name])

    def builtin_photo(self) -> str:
        """The built-in photo for an image input: a file, so it keeps its name (grace_hopper.jpg) in
        messages and in the result's metadata (a PIL image reached the job as "image.png")."""
        return self.builtin_photo_file()

    def builtin_style(self) -> str:
        """The built-in swirl painting, as a file named for it (see builtin_photo)."""
        from ..demo import swirl_painting

        path = self.tmp / BUILTIN_STYLE
        if not path.exists():
            images.write_atomic(path, lambda f: swirl_painting(512).save(f, format="PNG"))
        return str(path)

    def builtin_photo_file(self) -> str:
        """A copy of the built-in photo in the temp folder (for file inputs)."""
        from ..demo import sample_photo_path

        path = self.tmp / BUILTIN_PHOTO
        if not path.exists():
            images.write_atomic(path, lambda f: f.write(sample_photo_path().read_bytes()))
        return str(path)

    def _job_dir(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="job-", dir=self.tmp))

    def _save(self, image: Image.Image, folder: Path, name: str, meta: dict) -> str:
        return str(images.save_image(image, folder / name, meta))

    # ---- Stylize -----------------------------------------------------------------------------
    @page_terms(STYLIZE_LABELS)
    def stylize(self, method: str, content, style1, style2, blend: str, gatys: dict, fast: dict,
                switch: jobs.StopSwitch | None = None) -> Iterator[tuple]:
        """Yields (preview image, status text, download path) as the job goes; `switch` stops an
        optimization early, keeping its best image."""
        from ..fast.models import ARBITRARY_BUILTIN
        from ..runinfo import run_metadata
        from ..style.config import StyleConfig

        _offered(method, self.methods(), "method")
        blend_values = parse_value(StyleConfig, BLEND, blend)
        content_img = check_upload(content, self.limits, "content image")
        names = {"content": display_name(content)}
        if method in ("gatys", "arbitrary"):
            records = [r for r in (style1, style2) if r is not None]
            if not records:
                raise ConfigError("upload a style image (or use the built-in painting)")
            styles = [check_upload(r, self.limits, "style image") for r in records]
            names["styles"] = [display_name(r) for r in records]
        if method == "gatys":
            specs = GATYS_MAIN + GATYS_MORE
            config = build_config(StyleConfig, specs, gatys, {"style_blend": blend_values,
                                                               "device": self.settings.device})
            config = replace(config, save_every=preview_every(config.iterations)).validate()
            config.blend(len(styles))
            self.limits.check_output(content_img.size, config.size)
            for style in styles:  # resized to size x style scale
                self.limits.check_output(style.size, round(config.size * config.style_scale),
                                         "style size (size x style scale)")
            yield None, "loading the network...", None
            yield from self._run_gatys(content_img, styles, config, names, switch)
            return
        if switch is not None:
            switch.one_pass()  # one pass: nothing for Stop to end early
        from ..fast.apply import OTHER_METHODS_OPTIONS, FastConfig

        config = build_config(FastConfig, FAST, fast, {"device": self.settings.device}).validate()
        # The form shows both methods' sliders: the other method's stay as they are, unused.
        config = replace(config, **{name: getattr(FastConfig, name) for name in
                                    OTHER_METHODS_OPTIONS["arbitrary" if method == "arbitrary" else "fast"]})
        self.limits.check_output(content_img.size, config.size or max(content_img.size))
        if method == "arbitrary":
            for style in styles:
                self.limits.check_output(style.size, config.style_size, "style size")
            model = ARBITRARY_BUILTIN
            if blend_values is not None and len(blend_values) != len(styles):
                raise ConfigError(f"style blend has {len(blend_values)} weight(s) for {len(styles)} style image(s)")
        else:
            model = method.removeprefix("model:")
            styles = []
            names["model"] = model

        def work(job: jobs.Job):
            from ..fast.apply import ArbitraryStylizer, FastStylizer, run_config

            start = time.perf_counter()
            if method == "arbitrary":
                stylizer = ArbitraryStylizer(model, config)
                job.check()
                out = stylizer(content_img, styles, blend_values, labels=[names["content"], *names["styles"]])
            else:
                stylizer = FastStylizer(model, config)
                job.check()
                out = stylizer(content_img)
            seconds = time.perf_counter() - start
            meta = run_metadata("stylize", run_config(stylizer, model, blend_values), inputs=names,
                                seconds=round(seconds, 3), model_card=stylizer.model.card)
            return out, meta, seconds

        yield None, "stylizing...", None
        folder = self._job_dir()
        try:
            for item in jobs.stream(work, self.slots):
                if isinstance(item, tuple):
                    out, meta, seconds = item[1]
                    path = self._save(out, folder, "stylized.png", meta)
                    # The saved PNG (unique per job: its metadata holds the job's time) rather than
                    # the PIL image: Gradio names cached images by their pixels, so simultaneous jobs
                    # with identical results shared one cache file, rewritten while another client
                    # downloaded it (bench/web_load.py: 1 of 20 downloads cut short).
                    yield path, f"done in {seconds:.1f} s: {out.width}x{out.height}", path
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _run_gatys(self, content: Image.Image, styles: list, config, names: dict,
                   switch: jobs.StopSwitch | None) -> Iterator[tuple]:
        from ..runinfo import run_metadata
        from ..style.gatys import stylize_images

        def work(job: jobs.Job):
            labels = [names["content"], *names["styles"]]
            return stylize_images(content, styles, config, job.callback, labels=labels)

        yield from self._optimization(work, "stylized.png",
                                      lambda r: run_metadata("stylize", r.config.to_dict(), inputs=names,
                                                             seed=config.seed, seconds=round(r.seconds, 3),
                                                             final_losses=r.losses,
                                                             stage_sizes=r.stage_sizes,
                                                             iterations_run=len(r.history)),
                                      switch, lambda stop: run_metadata("stylize", (stop.config or config).to_dict(),
                                                                        inputs=names, seed=config.seed,
                                                                        interrupted_at=_stopped_at(stop)),
                                      stages=len(config.stage_sizes()))

    def _optimization(self, work, filename: str, meta_of, switch: jobs.StopSwitch | None,
                      stopped_meta, stages: int = 1, summary=None, kept=None) -> Iterator[tuple]:
        """Stream a job whose progress carries preview images: (preview, status, None) while it
        runs, then (result, summary, download path); after a Stop, the best image so far as the
        result (its metadata from stopped_meta(Interrupted)). `summary(result)` and `kept(stop)`
        replace the status's loss terms and its "the best image so far"."""
        folder = self._job_dir()
        try:
            for item in jobs.stream(work, self.slots, switch=switch):
                if isinstance(item, jobs.Tick):
                    preview = images.tensor_to_pil(item.image) if item.image is not None else SKIP
                    yield preview, jobs.describe(item), SKIP
                else:
                    result = item[1]
                    path = self._save(result.image, folder, filename, meta_of(result))
                    terms = summary(result) if summary else ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items())
                    yield (result.image, f"done in {result.seconds:.1f} s: {result.image.width}x"
                           f"{result.image.height} ({terms})", path)
        except Interrupted as stop:
            # (a coarse stage's image comes upsampled to the size asked for)
            where = f"at iteration {stop.iteration}" + (f" of stage {stop.stage}/{stages}" if stages > 1 else "")
            yield self._kept(stop, folder, filename, stopped_meta(stop), where,
                             kept(stop) if kept else "the best image so far")
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _kept(self, stop: Interrupted, folder: Path, filename: str, meta: dict, where: str, what: str) -> tuple:
        """(image, status, download) for a job ended by the Stop button: what it had so far."""
        image = images.tensor_to_pil(stop.best_image)
        path = self._save(image, folder, filename, meta)
        return image, f"stopped {where}: {what}, {image.width}x{image.height}", path

    def methods(self) -> dict[str, str]:
        """Stylize methods offered: value -> label (built-in models as installed)."""
        from ..fast.models import ARBITRARY_KIND, STYLE_KIND, builtin_names, list_styles

        paintings = {r["name"]: r["painting"] for r in list_styles()}
        out = {"gatys": "gatys: optimize the image (slow, best)"}
        if builtin_names(ARBITRARY_KIND):
            out["arbitrary"] = "arbitrary: any style image, one pass (AdaIN)"
        for name in builtin_names(STYLE_KIND):
            painting = f" ({paintings[name]})" if paintings.get(name) else ""
            out[f"model:{name}"] = f"built-in style: {name}{painting}, one pass"
        return out

    # ---- Classify ----------------------------------------------------------------------------
    def models(self) -> dict[str, str]:
        return {IMAGENET: "EfficientNet-Lite0 (ImageNet, 1000 classes)", **{k: k for k in self.runs}}

    def classify(self, records, model: str) -> tuple:
        """(top-5 of the first image as {class: probability}, bar chart, markdown table)."""
        from ..classify.predict import predict_images

        _offered(model, self.models(), "model")
        if records is None or records == []:
            raise ConfigError("upload at least one image")
        records = records if isinstance(records, list) else [records]
        if len(records) > MAX_CLASSIFY:
            raise ConfigError(f"at most {MAX_CLASSIFY} images at once, not {len(records)}")
        # Every upload is checked now, from its header (a bad last file fails before any work), and
        # decoded in the job one at a time, with every check again (a file gone or replaced since
        # says so by the client's name): decoded all at once, 16 uploads at the pixel cap held
        # 2.4 GB, and 8 drawn at full size in the chart peaked at 5.2 GB.
        for r in records:
            probe_upload(r, self.limits)
        labels = [display_name(r) for r in records]
        thumbs: dict[str, Image.Image] = {}

        def load(key: str) -> Image.Image:
            image = check_upload(records[int(key)], self.limits)
            thumbs[key] = thumbnail(image)
            return image

        def work(job: jobs.Job):
            net = self.net(model)
            if net.classes is None:
                raise ConfigError(f"{model} has no named classifier head")
            job.check()
            keys = [str(i) for i in range(len(records))]
            return predict_images(net, list(net.classes), keys, net.input_size, self.device(), top=5,
                                  batch=1, keep_images=0, load=load)

        preds = None
        for item in jobs.stream(work, self.slots):
            if isinstance(item, tuple):
                preds = [replace(p, image=thumbs[p.path]) for p in item[1]]
        top = {c: float(p) for c, p in preds[0].top}
        rows = ["| image | top 5 |", "| --- | --- |"]
        rows += [f"| {_md(label)} | " + ", ".join(f"{_md(c)} {p:.1%}" for c, p in pred.top) + " |"
                 for label, pred in zip(labels, preds)]
        return top, probability_chart(preds, labels), "\n".join(rows)

    # ---- Explain -----------------------------------------------------------------------------
    @page_terms(EXPLAIN_LABELS)
    def explain(self, record, options: dict) -> Iterator[tuple]:
        """Yields (figure, gallery [(image, caption)], top-5 {name: score}, status)."""
        from ..vis.explain import DEFAULT_SIZE, ExplainConfig, explain, explain_figure, panels

        image = check_upload(record, self.limits)
        config = build_config(ExplainConfig, self.explain_specs + EXPLAIN_MORE, options,
                              {"device": self.settings.device}).validate()
        self.limits.check_output(image.size, config.size or DEFAULT_SIZE)  # (a run's own size is smaller)

        def work(job: jobs.Job):
            net = self.net(config.net)
            job.check()
            result = explain(image, config, net=net)
            return result, explain_figure(result), panels(result)

        yield SKIP, SKIP, SKIP, "explaining..."
        for item in jobs.stream(work, self.slots):
            if isinstance(item, tuple):
                result, figure, shown = item[1]
                gallery = [(Image.fromarray((data.clip(0, 1) * 255).round().astype("uint8")), caption)
                           for caption, data in shown]
                top = {f"{p.name} ({p.index})": max(0.0, min(1.0, p.score)) for p in result.top} \
                    if result.kind == "class" else _relative({p.name: p.score for p in result.top})
                yield figure, gallery, top, f"{result.target_name}: done in {result.seconds:.1f} s"

    # ---- Dream & textures --------------------------------------------------------------------
    @page_terms(DREAM_LABELS)
    def dream(self, record, options: dict, switch: jobs.StopSwitch | None = None) -> Iterator[tuple]:
        """Yields (image, status, download path); `switch` stops it early, keeping the dream so far."""
        from ..runinfo import run_metadata
        from ..vis.dream import DreamConfig, Dreamer

        image = check_upload(record, self.limits)
        config = build_config(DreamConfig, DREAM_MAIN + DREAM_MORE, options,
                              {"device": self.settings.device}).validate()
        self.limits.check_output(image.size, config.size)
        names = {"image": display_name(record)}

        def work(job: jobs.Job):
            dreamer = Dreamer(config)
            job.check()
            return dreamer.run(image, job.callback, preview_every(config.steps))

        yield SKIP, "loading the network...", None
        folder = self._job_dir()
        try:
            for item in jobs.stream(work, self.slots, switch=switch):
                if isinstance(item, jobs.Tick):
                    # The objective every step; the full-size dream so far every few steps.
                    p = item.progress
                    eta = f" · ETA {item.eta:.0f} s" if item.eta is not None else ""
                    shown = images.tensor_to_pil(item.image) if item.image is not None else SKIP
                    yield shown, (f"octave {p.stage}/{p.stages} · step {p.iteration}/{p.iterations} · "
                                  f"objective {-p.loss:.4g} · {p.elapsed:.0f} s{eta}"), SKIP
                else:
                    r = item[1]
                    meta = run_metadata("dream", r.config.to_dict(), inputs=names, seed=config.seed,
                                        seconds=round(r.seconds, 3), objective=r.objective,
                                        start_objective=r.start_objective)
                    path = self._save(r.image, folder, "dream.png", meta)
                    yield r.image, (f"done in {r.seconds:.1f} s: objective {r.start_objective:.4g} -> "
                                    f"{r.objective:.4g}"), path
        except Interrupted as stop:
            meta = run_metadata("dream", config.to_dict(), inputs=names, seed=config.seed,
                                interrupted_at={"octave": stop.stage, "step": stop.iteration})
            yield self._kept(stop, folder, "dream.png", meta, f"in octave {stop.stage} at step {stop.iteration}",
                             "the dream so far")
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @page_terms(TEXTURE_LABELS)
    def texture(self, record, options: dict, switch: jobs.StopSwitch | None = None) -> Iterator[tuple]:
        """Yields (preview image, status, download path); `switch` stops it early, keeping its best image."""
        from ..runinfo import run_metadata
        from ..vis.texture import TextureConfig, synthesize

        source = check_upload(record, self.limits, "source texture")
        config = build_config(TextureConfig, TEXTURE_MAIN + TEXTURE_MORE, options,
                              {"device": self.settings.device})
        config = replace(config, save_every=preview_every(config.iterations)).validate()
        self.limits.check_output(config.size, max(config.size))
        self.limits.check_output(source.size, config.source_size, "source size")
        names = {"source": display_name(record)}

        def work(job: jobs.Job):
            return synthesize(source, config, job.callback, label=names["source"])

        yield SKIP, "loading the network...", None
        yield from self._optimization(work, "texture.png",
                                      lambda r: run_metadata("texture", r.config.to_dict(), inputs=names,
                                                             seed=config.seed, seconds=round(r.seconds, 3)),
                                      switch, lambda stop: run_metadata("texture", config.to_dict(), inputs=names,
                                                                        seed=config.seed,
                                                                        interrupted_at=_stopped_at(stop)))


class _Skip:
    """'Leave this output as it is' (the page turns it into Gradio's skip update)."""

    def __repr__(self) -> str:
        return "SKIP"


SKIP = _Skip()


def _stopped_at(stop: Interrupted) -> dict:
    return {"stage": stop.stage, "iteration": stop.iteration}


def _offered(value, offered: dict, what: str) -> None:
    """Refuse a choice the page did not offer (untrusted JSON: any type, a list included)."""
    if not isinstance(value, str) or value not in offered:
        raise ConfigError(f"unknown {what} {str(value)[:40]!r}; choose one from the list")


def _relative(scores: dict[str, float]) -> dict[str, float]:
    """Channel activations as fractions of the largest (a label's bars are 0..1)."""
    peak = max([abs(v) for v in scores.values()] + [1e-12])
    return {k: max(0.0, v / peak) for k, v in scores.items()}


def _md(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")

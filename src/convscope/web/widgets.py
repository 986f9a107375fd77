"""Form widgets made from an engine's config dataclass, and values read back into a config.

One source of truth: a widget's default, help text and choices are the field's own (its default,
metadata["help"], metadata["choices"]); nothing is re-declared here. A page may narrow a field
(fewer choices, e.g. no file path for `init`) or show it as a slider (a display range), never
change its default. Values coming back from a browser are untrusted JSON: each is parsed for the
field's type and, where the field has choices, must be one of the choices offered.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, fields

from ..errors import ConfigError, UserError

MAX_TEXT = 400  # characters of a text option (layer lists are the longest)


@dataclass(frozen=True)
class Spec:
    """How one field is shown: `choices` narrows the field's own; `slider` = (low, high, step);
    `help` replaces the field's help where `choices` leave out what it describes; `suggest` shows a
    text field as a list of values that also takes any value typed (the values are a hint: what
    comes back is parsed as the field's text, not limited to them)."""

    name: str
    choices: tuple | None = None
    slider: tuple[float, float, float] | None = None
    label: str | None = None
    help: str | None = None
    suggest: tuple | None = None


def field_of(cls, name: str) -> Field:
    for f in fields(cls):
        if f.name == name:
            return f
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def default_of(f: Field):
    return f.default if f.default is not MISSING else None


def _kind(f: Field) -> tuple[str, bool]:
    """('bool' | 'int' | 'float' | 'str' | 'tuple[...]', optional) from the annotation text."""
    text = str(f.type).replace(" ", "")
    optional = text.endswith("|None")
    return text.removesuffix("|None"), optional


def label_of(name: str) -> str:
    return name.replace("_", " ")


def spec_label(spec: Spec | str) -> str:
    """The label a field's widget shows (and the name messages about it use)."""
    spec = Spec(spec) if isinstance(spec, str) else spec
    return spec.label or label_of(spec.name)


def labels_of(*spec_lists) -> dict[str, str]:
    """field name -> the label its widget shows, for the fields of one tab (several lists: its
    forms). A field shown twice in a tab must carry one label, or messages could not name it."""
    out: dict[str, str] = {}
    for specs in spec_lists:
        for spec in specs:
            spec = Spec(spec) if isinstance(spec, str) else spec
            if out.setdefault(spec.name, spec_label(spec)) != spec_label(spec):
                raise ValueError(f"{spec.name} is shown with two labels: {out[spec.name]!r}, {spec_label(spec)!r}")
    return out


# A CLI flag in an engine's message: "--style-weight" (not inside a word or a longer flag).
_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)(?![\w-])")


def in_form_terms(message: str, labels: dict[str, str]) -> str:
    """An engine's message with each flag of a field the form shows named by that field's label
    ("--style-weight must be ..." -> "style weight must be ..."). The engines speak in CLI flags,
    one message for every front end; a web user sees fields. Other flags are left as they are."""
    return _FLAG.sub(lambda m: labels.get(m.group(1).replace("-", "_"), m.group(0)), message)


def _choices(cls, spec: Spec) -> tuple | None:
    own = field_of(cls, spec.name).metadata.get("choices")
    if spec.choices is None:
        return tuple(own) if own else None
    if own:
        extra = [c for c in spec.choices if c not in own]
        if extra:
            raise ValueError(f"{cls.__name__}.{spec.name}: {extra} are not among the field's choices")
    return tuple(spec.choices)


def _as_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value)
    return str(value)


def make_widget(cls, spec: Spec | str, elem_prefix: str = "", labels: dict[str, str] | None = None):
    """The Gradio input for one field of `cls`, with the field's default and help; with `labels`
    (the tab's: `labels_of`), the CLI flags the help names are named as the tab's fields."""
    import gradio as gr

    spec = Spec(spec) if isinstance(spec, str) else spec
    f = field_of(cls, spec.name)
    kind, optional = _kind(f)
    default = default_of(f)
    info = in_form_terms(spec.help or f.metadata.get("help", ""), labels or {})
    common = {"label": spec_label(spec), "info": info,
              "elem_id": f"{elem_prefix}{f.name}" if elem_prefix else None}
    choices = _choices(cls, spec)
    if kind == "bool":
        return gr.Checkbox(value=bool(default), **common)
    if choices and kind.startswith("tuple["):  # several of the choices, in the order of the choices
        return gr.CheckboxGroup(choices=list(choices), value=list(default or ()), **common)
    if choices:
        return gr.Dropdown(choices=list(choices), value=default, **common)
    if spec.suggest is not None and kind == "str":
        return gr.Dropdown(choices=list(dict.fromkeys([default, *spec.suggest])), value=default,
                           allow_custom_value=True, filterable=True, **common)
    if kind in ("int", "float") and spec.slider is not None:
        low, high, step = spec.slider
        return gr.Slider(minimum=low, maximum=high, step=step, value=default, **common)
    if kind in ("int", "float") and optional and default is None:
        # A text box, empty = the field's default: Gradio's Number shows an empty value as 0, and
        # an int one sends 0 back, so DeepDream amplified channel 0 instead of the whole layer and
        # opening Explain's channel box turned a class explanation into one of channel 0.
        common["info"] = f"{info} (empty = default)"
        return gr.Textbox(value="", placeholder="default", max_lines=1, max_length=40, **common)
    if kind == "int":
        return gr.Number(value=default, precision=0, **common)
    if kind == "float":
        return gr.Number(value=default, **common)
    if kind.startswith("tuple["):
        common["info"] = f"{info} (separate values with spaces)" + ("; empty = default" if optional else "")
    return gr.Textbox(value=_as_text(default), max_lines=1, max_length=MAX_TEXT, **common)


def make_widgets(cls, specs, elem_prefix: str = "", labels: dict[str, str] | None = None) -> dict:
    """name -> widget, in the order given."""
    out = {}
    for spec in specs:
        spec = Spec(spec) if isinstance(spec, str) else spec
        out[spec.name] = make_widget(cls, spec, elem_prefix, labels)
    return out


# ---- values back from the browser ----------------------------------------------------------------

# The largest whole number a form field takes: a seed's (iterations and sizes have lower limits).
MAX_WHOLE = 2**63 - 1


def _number(label: str, raw, whole: bool):
    if isinstance(raw, bool) or raw is None:
        raise ConfigError(f"{label} needs a number")
    if isinstance(raw, str):
        raw = raw.strip()
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{label} must be a number, not {str(raw)[:40]!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{label} must be a finite number, not {str(raw)[:40]!r}")
    if whole:
        if value != int(value):
            raise ConfigError(f"{label} must be a whole number, not {str(raw)[:40]!r}")
        if abs(value) > MAX_WHOLE:  # (every whole field's own limit is far below; 1e308 read 309 digits long)
            raise ConfigError(f"{label} must be a whole number below 2**63, not {str(raw)[:40]!r}")
        return int(value)
    return value


_SPLIT = re.compile(r"[\s,]+")


def parse_value(cls, spec: Spec | str, raw):
    """One field's value from what a browser sent (untrusted): typed, and within the offered choices."""
    spec = Spec(spec) if isinstance(spec, str) else spec
    f = field_of(cls, spec.name)
    kind, optional = _kind(f)
    label = spec_label(spec)
    choices = _choices(cls, spec)
    if choices and kind.startswith("tuple["):
        if not isinstance(raw, (list, tuple)) or any(v not in choices for v in raw):
            raise ConfigError(f"{label} must be some of {', '.join(map(str, choices))}")
        picked = tuple(c for c in choices if c in raw)
        if not picked and not optional:
            raise ConfigError(f"{label}: pick at least one of {', '.join(map(str, choices))}")
        return picked or None
    if choices:
        if raw not in choices:
            raise ConfigError(f"{label} must be one of {', '.join(map(str, choices))}, not {str(raw)[:40]!r}")
        return raw
    if kind == "bool":
        if not isinstance(raw, bool):
            raise ConfigError(f"{label} must be true or false, not {str(raw)[:40]!r}")
        return raw
    empty = raw is None or (isinstance(raw, str) and not raw.strip())
    if empty and optional:
        return None
    if kind in ("int", "float"):
        return _number(label, raw, kind == "int")
    if not isinstance(raw, str):
        raise ConfigError(f"{label} must be text, not {type(raw).__name__}")
    if len(raw) > MAX_TEXT:
        raise ConfigError(f"{label} is too long (at most {MAX_TEXT} characters)")
    if kind == "str":
        return raw.strip()
    parts = [p for p in _SPLIT.split(raw.strip()) if p]
    inner = kind[len("tuple["):-1].split(",")
    if not parts:  # (a fixed-length field said "needs at least one value", then "needs 2 values, not 1")
        raise ConfigError(f"{label} needs at least one value" if kind.endswith(",...]") else
                          f"{label} needs {len(inner)} values")
    if kind.endswith(",...]"):
        item = inner[0]
        values = tuple(_number(label, p, item == "int") if item in ("int", "float") else p for p in parts)
    else:
        if len(parts) != len(inner):
            raise ConfigError(f"{label} needs {len(inner)} values, not {len(parts)}")
        values = tuple(_number(label, p, t == "int") if t in ("int", "float") else p for p, t in zip(parts, inner))
    return values


def build_config(cls, specs, raw: dict, fixed: dict | None = None):
    """`cls(**parsed values, **fixed)`: fields not shown keep their dataclass defaults."""
    values = {}
    for spec in specs:
        spec = Spec(spec) if isinstance(spec, str) else spec
        values[spec.name] = parse_value(cls, spec, raw.get(spec.name))
    values.update(fixed or {})
    return cls(**values)


def form_terms(labels: dict[str, str], rewrite: Callable[[str], str] | None = None):
    """A tab's action (a generator) whose errors name the fields of the tab's form where the
    engines' messages name CLI flags: one translation for every message, from the table of labels
    the form is built from (`forms`), after `rewrite` (a tab's own changes to the wording)."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except UserError as exc:
                exc.args = (in_form_terms(rewrite(str(exc)) if rewrite else str(exc), labels),)
                raise
        return run
    return wrap

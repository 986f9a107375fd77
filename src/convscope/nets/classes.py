"""Class names as users type them: an index, or a name in any case ("Military_Uniform" is 652)."""

from __future__ import annotations

import difflib
import re

from ..errors import ConfigError


def normal_name(name: str) -> str:
    """Case, underscores and runs of spaces do not matter."""
    return " ".join(str(name).replace("_", " ").lower().split())


def is_class_name(net, text: str) -> bool:
    return net.classes is not None and normal_name(text) in {normal_name(c) for c in net.classes}


def class_index(net, text: str, option: str = "--class") -> int:
    """The class `text` names on `net`: an index or a class name; ConfigError (with a "did you
    mean") for a headless net, an index out of range, an unknown or an ambiguous name."""
    n = net.num_classes
    if n is None:
        raise ConfigError(f"{option} needs a classifier, and {net.net_name} is convolutional only (no head); "
                          "use --net efficientnet_lite0 or a torchvision classifier such as resnet18")
    text = str(text).strip()
    if re.fullmatch(r"[+-]?\d+", text):
        index = int(text)
        if not 0 <= index < n:
            raise ConfigError(f"{option} {index} is out of range: {net.net_name} has {n} classes (0 to {n - 1})")
        return index
    if net.classes is None:
        raise ConfigError(f"{net.net_name} has no class names; give {option} as an index from 0 to {n - 1}")
    key = normal_name(text)
    names = [normal_name(c) for c in net.classes]
    found = [i for i, c in enumerate(names) if c == key]
    if len(found) > 1:
        raise ConfigError(f"class name {text!r} is ambiguous: it names classes {', '.join(map(str, found))}; "
                          "give the index")
    if found:
        return found[0]
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.6) or [c for c in names if key in c][:3]
    hint = f" (did you mean {' or '.join(repr(net.classes[names.index(c)]) for c in close)}?)" if close else ""
    raise ConfigError(f"unknown class {text!r} for {net.net_name}{hint}; give a class name or an index "
                      f"from 0 to {n - 1}")

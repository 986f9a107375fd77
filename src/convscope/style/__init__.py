"""Style transfer. `stylize` is the Python entry point (also exported as `convscope.stylize`).

Importing this package (or `convscope.style.config`, which the CLI reads) does not load torch:
the engine (`gatys`) and the input checks load when `stylize` runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from os import PathLike
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .config import StyleConfig

if TYPE_CHECKING:
    from PIL import Image

    from ..optimize import Progress


def stylize(content: str | PathLike | Image.Image,
            styles: str | PathLike | Image.Image | Sequence[str | PathLike | Image.Image],
            *, config: StyleConfig | None = None,
            callback: Callable[[Progress], None] | None = None, **options) -> Image.Image:
    """Stylize `content` with one or more `styles` (paths, PIL images or float tensors [1, 3, H, W]
    in [0, 1]); returns a PIL image.

    Options are StyleConfig fields (size=512, iterations=500, preset="gatys", ...), given either as a
    `config` or as keyword arguments (which override the config's fields). `callback` receives a
    `convscope.optimize.Progress` after every iteration.

        >>> img = convscope.stylize("photo.jpg", "painting.jpg", size=384, iterations=300)
    """
    from ..argcheck import as_image, config_of
    from .gatys import stylize_images

    if not isinstance(styles, (list, tuple)):
        styles = [styles]  # one style: a path, an image or a tensor
    if config is not None:
        config_of(config, StyleConfig, note="; or give the options as keyword arguments")
    known = {f.name for f in fields(StyleConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; see StyleConfig for the list")
    config = StyleConfig(**{**(config.to_dict() if config else {}), **options})
    labels = [x if isinstance(x, str) else getattr(x, "name", None) or "" for x in [content, *styles]]
    content = as_image(content, "content")
    styles = [as_image(s, f"style image {i}") for i, s in enumerate(styles, start=1)]
    return stylize_images(content, styles, config, callback,
                          labels=[str(x) for x in labels]).image


__all__ = ["StyleConfig", "stylize"]

"""Style transfer. `stylize` is the Python entry point (also exported as `convscope.stylize`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from os import PathLike

from PIL import Image

from .. import images
from ..errors import ConfigError
from ..optimize import Progress
from .config import StyleConfig


def _as_image(x) -> Image.Image:
    if isinstance(x, Image.Image):
        return images.to_rgb(x)  # alpha over white and 16-bit scaled, as for files
    return images.load_image(x)


def stylize(content: str | PathLike | Image.Image,
            styles: str | PathLike | Image.Image | Sequence[str | PathLike | Image.Image],
            *, config: StyleConfig | None = None,
            callback: Callable[[Progress], None] | None = None, **options) -> Image.Image:
    """Stylize `content` with one or more `styles` (paths or PIL images); returns a PIL image.

    Options are StyleConfig fields (size=512, iterations=500, preset="gatys", ...), given either as a
    `config` or as keyword arguments (which override the config's fields). `callback` receives a
    `convscope.optimize.Progress` after every iteration.

        >>> img = convscope.stylize("photo.jpg", "painting.jpg", size=384, iterations=300)
    """
    from .gatys import stylize_images

    if isinstance(styles, (str, PathLike, Image.Image)):
        styles = [styles]
    known = {f.name for f in fields(StyleConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; see StyleConfig for the list")
    config = StyleConfig(**{**(config.to_dict() if config else {}), **options})
    labels = [x if isinstance(x, str) else getattr(x, "name", "") for x in [content, *styles]]
    return stylize_images(_as_image(content), [_as_image(s) for s in styles], config, callback,
                          labels=[str(x) for x in labels]).image


__all__ = ["StyleConfig", "stylize"]

"""torchvision's pretrained weights, fetched into torch hub's cache before torchvision reads them.

Why fetch them here: torch.hub writes 'Downloading: "URL" to PATH' to stdout before it tries, so
offline a user saw that line and then convscope's error, where the house rule wants one line, and a
first download put it into the output of `--json` commands (`explain --net resnet18 --json`). The
file lands where torchvision looks for it (TORCH_HOME's hub/checkpoints, under the URL's file
name), so torchvision then loads it without a word; the download shows torch's progress bar,
checks the hash its name carries, and renames a finished file into place (no half-written cache).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

from ..errors import WeightsError

HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # resnet18-f37072fd.pth: the first hex digits of its SHA-256


def cached_weights_path(url: str) -> Path:
    """Where torch hub keeps the file of `url` (whether or not it is there yet)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def fetch_weights(weights, arch: str, hint: str) -> Path:
    """The cached file of a torchvision weights enum, downloaded first when missing.

    Raises WeightsError (one line, ending with `hint`: what to do instead) when it cannot be had."""
    import torch

    path = cached_weights_path(weights.url)
    if path.is_file():
        return path
    match = HASH_IN_NAME.search(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(weights.url, str(path), hash_prefix=match.group(1) if match else None,
                                       progress=True)
    except Exception as exc:  # offline, a proxy, a full disk, a hash mismatch: one line for the user
        raise WeightsError(f"cannot get torchvision {arch} weights ({_one_line(exc)}); {hint}") from None
    return path


def unreadable_weights(exc: Exception, weights, arch: str, alternative: str) -> WeightsError:
    """The error for cached weights torchvision could not load (a damaged file): which file to delete."""
    return WeightsError(f"cannot load torchvision {arch} weights ({_one_line(exc)}); delete "
                        f"{cached_weights_path(weights.url)} to download them again, or use {alternative}")


def _one_line(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"

"""convscope: deep learning on images with convolutional networks.

Heavy modules load on first use, so `import convscope` stays cheap.
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name in ("stylize", "StyleConfig"):
        from . import style

        return getattr(style, name)
    if name == "get_net":
        from .nets import get_net

        return get_net
    raise AttributeError(f"module 'convscope' has no attribute {name!r}")


__all__ = ["StyleConfig", "get_net", "stylize", "__version__"]


def __dir__():
    # The lazy names too: a notebook's tab completion and dir() list what `convscope.` offers.
    return sorted(set(globals()) | set(__all__))

"""The net a see-inside engine runs on: the caller's already-loaded one, or config.net loaded here."""
from __future__ import annotations

from dataclasses import replace

import torch

from ..argcheck import check_loaded_net
from ..devices import resolve_device
from ..nets import get_net


def engine_net(config, net=None, channels_last: bool = False):
    """(config, net, device, own) for an engine's validated `config` and optional `net`.

    Without `net`, config.net is loaded on config.device (in NHWC on the CPU and CUDA where
    `channels_last`; own is True). A net handed in runs where it is, as it is (own is False), and
    names itself in the returned config, whatever config.net said: the result's record, titles and
    sidecars then say which net made them. Anything but a loaded net (a torch module with the named-
    layer interface: argcheck.check_loaded_net) is a ConfigError."""
    check_loaded_net(net)
    if net is None:
        device = resolve_device(config.device)
        net = get_net(config.net, "max", device)
        if channels_last:
            net = net.use_channels_last(device.type in ("cuda", "cpu"))
        return config, net, device, True
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    name = getattr(net, "net_name", None)
    return (replace(config, net=name) if isinstance(name, str) else config), net, device, False

"""Test helper: build each backbone once instead of once per run.

A fresh VGG19 costs seconds on CPU (dequantizing 20M weights), a tiny test run a fraction of a
second. Like the real `get_net`, which copies a loaded net for each caller, each call returns a
copy of the net built once: an engine may change its copy (a bf16 run casts its weights in place,
nets.cast_for) without reaching the next test. Loading itself is tested in test_nets.py.
"""

import copy

import torch


def cached_get_net(real, cache: dict):
    """A drop-in for `get_net` that returns a copy of the net `real` built for the same arguments before."""
    def cached(name="vgg19", pooling="max", device="cpu", dtype=torch.float32):
        key = (name, pooling, str(device), dtype)
        if key not in cache:
            cache[key] = real(name, pooling, device, dtype)
        return copy.deepcopy(cache[key])

    return cached

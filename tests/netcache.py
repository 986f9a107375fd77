"""Test helper: build each backbone once instead of once per run.

A fresh VGG19 costs seconds on CPU (dequantizing 20M weights), a tiny test run a fraction of a
second. Backbones are frozen (eval, no gradients) and no run changes their weights, so tests may
share one; loading itself is tested in test_nets.py.
"""

import torch


def cached_get_net(real, cache: dict):
    """A drop-in for `get_net` that returns the net `real` built for the same arguments before."""
    def cached(name="vgg19", pooling="max", device="cpu", dtype=torch.float32):
        key = (name, pooling, str(device), dtype)
        if key not in cache:
            cache[key] = real(name, pooling, device, dtype)
        return cache[key]

    return cached

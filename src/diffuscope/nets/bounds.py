"""Bounds on a U-Net config, checked before the network is built (the numbers live in checks.limits)."""

from __future__ import annotations

import torch

from diffuscope.checks.errors import UsageError
from diffuscope.checks.limits import (
    MAX_BASE_CHANNELS,
    MAX_CHANNEL_MULT,
    MAX_HEADS,
    MAX_IMAGE_SIZE,
    MAX_NUM_CLASSES,
    MAX_PARAMETERS,
    MAX_RES_BLOCKS,
    MIN_IMAGE_SIZE,
    check_memory,
    check_range,
)
from diffuscope.nets.unet import UNet


def count_unet_parameters(unet_config) -> int:
    """Exact parameter count of a U-Net config, built on the meta device (no memory allocated)."""
    with torch.device("meta"):
        net = UNet(unet_config)
    return sum(p.numel() for p in net.parameters())


def check_network(unet_config, *, where: str = "model") -> int:
    """Bound each size of a U-Net config, then its parameter count; returns the count."""
    u = unet_config
    for name, value, lo, hi in (("base_channels", u.base_channels, 1, MAX_BASE_CHANNELS),
                                ("num_res_blocks", u.num_res_blocks, 1, MAX_RES_BLOCKS),
                                ("num_classes", u.num_classes, 0, MAX_NUM_CLASSES),
                                ("num_heads", u.num_heads, 1, MAX_HEADS),
                                ("image_size", u.image_size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise UsageError(f"{where}.unet.{name} must be an integer, got {str(value)[:80]!r}")
        check_range(f"{where}.unet.{name}", value, lo, hi)
    mult = tuple(u.channel_mult)
    if not 1 <= len(mult) <= 8 or not all(isinstance(m, int) and 1 <= m <= MAX_CHANNEL_MULT for m in mult):
        raise UsageError(f"{where}.unet.channel_mult must be 1..8 integers in 1..{MAX_CHANNEL_MULT}, got "
                         f"{str(mult)[:80]}")
    n = count_unet_parameters(u)
    if n > MAX_PARAMETERS:
        raise UsageError(f"{where}: the network would have {n:,} parameters, more than the limit of "
                         f"{MAX_PARAMETERS:,}")
    check_memory(f"{where}: a network of {n:,} parameters", 4 * n)
    return n

"""Small shared builders for tests: a tiny training config on the built-in 8x8 digits."""

from __future__ import annotations

from dataclasses import replace

from diffuscope.nets import UNetConfig
from diffuscope.training import preset

TINY_UNET = UNetConfig(base_channels=16, channel_mult=(1, 2), num_res_blocks=1)


def tiny_config(max_steps: int = 30, **train):
    base = preset("digits")
    model = replace(base.model, unet=TINY_UNET)
    options = {"batch_size": 32, "warmup_steps": 5, "checkpoint_every": max_steps, "sample_every": 0, "log_every": 5,
               "sample_steps": 4, "threads": 0, **train}
    t = replace(base.train, max_steps=max_steps, **options)
    return replace(base, model=model, train=t)

"""Argument types shared by the commands: each rejects bad values with a message naming the valid range.

Every number has a documented range (diffuscope.checks.limits, docs/limits.md) and must be finite; every name must be
non-empty. The checks themselves live in ``diffuscope.checks.validate`` so files and flags obey the same rules.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from diffuscope.checks import limits, validate
from diffuscope.checks.errors import UsageError, quote


def _typed(check: Callable[[str], object], type_name: str):
    """An argparse ``type`` from a validate check: UsageError -> ArgumentTypeError (argparse adds the flag)."""

    def parse(text: str):
        try:
            return check(text)
        except UsageError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = type_name
    return parse


def int_range(lo: int, hi: int, name: str):
    return _typed(lambda t: validate.integer(t, "", lo, hi), name)


def float_range(lo: float, hi: float, name: str, *, lo_open: bool = False):
    return _typed(lambda t: validate.number(t, "", lo, hi, lo_open=lo_open), name)


BIG = 10_000_000  # step counts and intervals of a training run
positive_int = int_range(1, BIG, "positive_int")
non_negative_int = int_range(0, BIG, "non_negative_int")


def _seed(text: str) -> int:
    if str(text).strip() == "-1":
        return -1
    try:
        return validate.integer(text, "", 0, 2**32 - 1)
    except UsageError:
        raise UsageError(f"must be -1 (random) or an integer in 0..4294967295, got {quote(text)}") from None


seed = _typed(_seed, "seed")
steps = int_range(1, limits.MAX_STEPS, "steps")
count = int_range(1, limits.MAX_N, "count")
batch_size = int_range(1, limits.MAX_BATCH_SIZE, "batch_size")
image_size = int_range(limits.MIN_IMAGE_SIZE, limits.MAX_IMAGE_SIZE, "image_size")
timesteps = int_range(1, limits.MAX_TIMESTEPS, "timesteps")
non_negative_float = float_range(0.0, 1e12, "non_negative_float")
guidance = float_range(0.0, limits.MAX_GUIDANCE, "guidance")
learning_rate = float_range(0.0, 1.0, "learning_rate", lo_open=True)
fraction = float_range(0.0, 1.0, "fraction")
name = _typed(validate.name, "name")
prompt = _typed(validate.prompt, "prompt")  # valid UTF-8, no control characters, bounded (validate.prompt)
interval = _typed(validate.interval, "interval")
port = int_range(1, 65535, "port")
base_channels = int_range(1, limits.MAX_BASE_CHANNELS, "base_channels")
latent_channels = int_range(1, 64, "latent_channels")
threads = int_range(0, 1024, "threads")


def add_dtype(parser: argparse.ArgumentParser) -> None:
    """``--dtype``: the weights' precision of a diffusers pipeline (issue 21)."""
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None,
                        help="precision of a diffusers pipeline's text encoder, UNet and VAE (default fp32; fp16 "
                             "and bf16 are for GPUs); diffuscope's own models run in fp32")

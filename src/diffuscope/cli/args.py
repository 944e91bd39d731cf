"""Argument types shared by the commands: each rejects bad values with a message naming the valid ones."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _checked(text: str, convert: Callable[[str], float], ok: Callable[[float], bool], valid: str):
    try:
        value = convert(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"must be {valid}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _checked(text, int, lambda v: v >= 1, "a positive integer")


def port(text: str) -> int:
    return _checked(text, int, lambda v: 1 <= v <= 65535, "a TCP port in 1..65535")


def non_negative_int(text: str) -> int:
    return _checked(text, int, lambda v: v >= 0, "an integer >= 0")


def seed(text: str) -> int:
    return _checked(text, int, lambda v: v == -1 or 0 <= v <= 2**32 - 1,
                    "-1 (random) or an integer in 0..4294967295")


def non_negative_float(text: str) -> float:
    return _checked(text, float, lambda v: v >= 0, "a number >= 0")


def interval(text: str) -> tuple[float, float]:
    """LO,HI noise levels with 0 <= LO < HI (HI may be inf)."""
    parts = text.split(",")
    try:
        lo, hi = (float(v) for v in parts)
    except ValueError:
        lo = hi = None
    if lo is None or not 0 <= lo < hi:
        raise argparse.ArgumentTypeError(
            f"must be two noise levels LO,HI with 0 <= LO < HI, e.g. 0.28,5.42, got {text!r}")
    return lo, hi

"""One BLAS thread for the metrics' small dense linear algebra.

With torch's OpenMP runtime loaded beside numpy's OpenBLAS, a 128x128 eigh or sqrtm measured 40-200x slower with
OpenBLAS's default threads than with one (0.2-3 s vs 5-11 ms on 2 busy cores); matrices this small gain nothing
from threads anyway. threadpoolctl comes with scikit-learn.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

_controller = None


def one_blas_thread(fn: F) -> F:
    """Decorator: run `fn` with BLAS limited to one thread (restored afterwards)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _controller
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - a dependency of scikit-learn
            return fn(*args, **kwargs)
        if _controller is None:
            _controller = ThreadpoolController()
        with _controller.limit(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]

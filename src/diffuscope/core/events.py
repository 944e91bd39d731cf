"""Progress events and cancellation for long work (generation, the sweep, phases, training).

Library code reports progress by calling an ``Observer`` with small ``Progress`` events and stops at a
``CancelToken``; it never draws a progress bar itself. The CLI subscribes a tqdm bar, the web page a server-sent
event stream: two observers of the same events (docs/architecture.md). A token is safe to cancel from another thread.

    token = CancelToken()
    generate(model, request, observer=print, cancel=token)  # token.cancel() from any thread stops it: Cancelled
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class Cancelled(Exception):
    """Raised inside long work when its CancelToken was cancelled; the work stops at the next check."""


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units of ``task`` are finished; ``data`` carries what a subscriber may show (a
    sampler's StepInfo, a finished sweep cell, a training step's loss)."""

    task: str  # "generate", "sweep", "phases", "train", ...
    done: int
    total: int
    message: str = ""
    data: Any = None


Observer = Callable[[Progress], None]


class CancelToken:
    """A flag that one thread sets and the worker checks between units of work."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise Cancelled if cancelled."""
        if self._event.is_set():
            raise Cancelled("cancelled")


def report(on_event: Observer | None, cancel: CancelToken | None, event: Progress) -> None:
    """Check the token (raise Cancelled), then hand ``event`` to the observer (if any)."""
    if cancel is not None:
        cancel.check()
    if on_event is not None:
        on_event(event)


class ProgressDenoiser:
    """Wraps a denoiser D(x, sigma, cond): one ``task`` Progress event per network call (one call = one NFE of one
    batch), ``stage`` as its message, and the cancel token checked before every call. For long work with no
    natural step of its own (the sweep, the phase measures)."""

    def __init__(self, denoiser, task: str, total: int, on_event: Observer | None, cancel: CancelToken | None):
        self.denoiser, self.task, self.total = denoiser, task, total
        self.on_event, self.cancel = on_event, cancel
        self.schedule = getattr(denoiser, "schedule", None)
        self.done, self.stage = 0, ""

    def __call__(self, x, sigma, cond=None):
        if self.cancel is not None:
            self.cancel.check()
        out = self.denoiser(x, sigma, cond)
        self.done += 1
        report(self.on_event, self.cancel, Progress(self.task, self.done, self.total, self.stage))
        return out

"""What every route shares, in one typed object: the models, the job queue, the output folder, the page token and
the optional secret. ``create_app`` builds one ``ServerState`` and keeps it in ``app.state.server``; a route reaches
it through the ``Server`` dependency (``def route(server: Server)``), never through a closure."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from diffuscope.checks.errors import UsageError, quote
from diffuscope.web.jobs import Worker
from diffuscope.web.lesson import ModelEntry


@dataclass
class ServerState:
    models: list[ModelEntry]
    out_dir: Path  # resolved; every job writes under out_dir/<job id>/
    worker: Worker
    token: str  # the random per-launch page token (X-Diffuscope-Token on state-changing requests)
    hosts: frozenset[str]  # Host names the server answers (DNS-rebinding guard)
    secret: str | None = None  # the user's secret (serve --token / DIFFUSCOPE_TOKEN): every request needs it
    forward_cache: dict[tuple, dict] = field(default_factory=dict)
    forward_lock: threading.Lock = field(default_factory=threading.Lock)

    def entry(self, name: str) -> ModelEntry:
        """The model called ``name`` (empty: the first one), else a one-line UsageError naming the valid ones."""
        if not name:
            return self.models[0]
        for m in self.models:
            if m.name == name:
                return m
        raise UsageError(f"unknown model {quote(name)}; valid: {', '.join(m.name for m in self.models)}")


def server_state(request: Request) -> ServerState:
    return request.app.state.server


Server = Annotated[ServerState, Depends(server_state)]

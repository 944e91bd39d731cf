"""What the routes share: queueing a job (429 with Retry-After when the queue is full), and the request bounds that
the lesson functions do not check themselves (seeds, and the limits the page is told about in /api/info)."""

from __future__ import annotations

from fastapi.responses import JSONResponse, Response

from diffuscope.checks import limits, validate
from diffuscope.samplers.base import MAX_SEED
from diffuscope.web.guard import error
from diffuscope.web.jobs import JobFn, QueueFull
from diffuscope.web.state import ServerState

RETRY_AFTER_S = 5  # what a 429 (queue full) or 503 (worker busy) asks the client to wait


def submit(server: ServerState, kind: str, fn: JobFn, **extra) -> Response:
    """Queue a job; the answer names it (an id the page may keep to reattach: GET /api/jobs/{id} and its events),
    its state and queue position, and any ``extra`` fields (a prompt's ``prompt_note``)."""
    try:
        job = server.worker.submit(kind, fn)
    except QueueFull as e:
        return error(429, str(e), {"Retry-After": str(RETRY_AFTER_S)})
    return JSONResponse({"job": job.id, "events": f"/api/jobs/{job.id}/events", "state": job.state,
                         "position": server.worker.position(job), **extra})


def check_seed(seed: int) -> int:
    return validate.integer(seed, "seed", 0, MAX_SEED)


def check_guidance(guidance: float) -> float:
    return validate.number(guidance, "guidance", 0, limits.MAX_GUIDANCE)

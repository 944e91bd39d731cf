"""Section 1: the forward process's frames. Torch work, so it runs as a job on the worker like everything else, and
is waited for with a deadline: a worker busy past FORWARD_TIMEOUT_S answers 503 with Retry-After (the job is
cancelled), a full queue 429; a request never hangs. Results are cached per (model, image, seed)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from diffuscope.checks.errors import UsageError
from diffuscope.web import processes
from diffuscope.web.guard import error
from diffuscope.web.jobs import QueueFull
from diffuscope.web.routes.common import RETRY_AFTER_S, check_seed
from diffuscope.web.state import Server

router = APIRouter()
FORWARD_TIMEOUT_S = 30.0  # a few hundred milliseconds of work: longer means the worker is busy with another job
CACHE_SIZE = 32


@router.get("/api/forward")
async def forward(server: Server, model: str = "", index: int = 0, seed: int = 0) -> Response:
    m = server.entry(model)
    seed = check_seed(seed)  # the image index is checked against the model's images by forward_frames
    key = (m.name, index, seed)
    with server.forward_lock:
        cached = server.forward_cache.get(key)
    if cached is not None:
        return JSONResponse(cached)
    box: dict[str, Any] = {}

    def work(job) -> dict:
        try:
            box["result"] = processes.forward_frames(m, index=index, seed=seed)
        except UsageError as e:
            box["error"] = str(e)
        return {"type": "done"}

    try:
        job = server.worker.submit("forward", work)
    except QueueFull as e:
        return error(429, str(e), {"Retry-After": str(RETRY_AFTER_S)})
    deadline = time.monotonic() + FORWARD_TIMEOUT_S
    while not job.finished:  # polled: waiting holds no thread
        if time.monotonic() > deadline:
            job.token.cancel()
            return error(503, f"the worker is busy with another job (no forward frames within {FORWARD_TIMEOUT_S:g} s):"
                              " try again shortly", {"Retry-After": str(RETRY_AFTER_S)})
        await asyncio.sleep(0.02)
    if "error" in box:
        return error(400, box["error"])
    if "result" not in box:  # the job failed (the worker logged why) or was cancelled
        return error(500, f"the forward frames failed: {job.events[-1].get('message', job.state)}")
    with server.forward_lock:
        if len(server.forward_cache) >= CACHE_SIZE:
            server.forward_cache.clear()
        server.forward_cache[key] = box["result"]
    return JSONResponse(box["result"])

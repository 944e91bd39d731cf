"""A job's state, its cancel, and its events as a server-sent event stream (every section's jobs).

The stream sends each event with its index as ``id``; an EventSource reconnecting sends the last one it saw as
``Last-Event-ID`` and the stream resumes after it (an id this job never sent is a 400). The stream ends right after
a finished job's last event. A job whose every stream closed is cancelled after DISCONNECT_GRACE_S."""

from __future__ import annotations

import asyncio
import json
import re
import threading

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from diffuscope.checks.errors import quote
from diffuscope.web.guard import error
from diffuscope.web.jobs import Job
from diffuscope.web.state import Server, ServerState

router = APIRouter()
DISCONNECT_GRACE_S = 5.0  # a job whose every stream closed is cancelled after this (EventSource reconnects sooner)
JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def _job(server: ServerState, job_id: str) -> Job | Response:
    job = server.worker.get(job_id) if JOB_ID.match(job_id) else None
    return error(404, f"no job {quote(job_id)}") if job is None else job


@router.post("/api/jobs/{job_id}/cancel")
def cancel(job_id: str, server: Server) -> Response:
    job = _job(server, job_id)
    if isinstance(job, Response):
        return job
    server.worker.cancel(job.id)
    return JSONResponse({"job": job.id, "state": job.state})


@router.get("/api/jobs/{job_id}")
def job_state(job_id: str, server: Server) -> Response:
    job = _job(server, job_id)
    if isinstance(job, Response):
        return job
    final = job.events[-1] if job.finished and job.events else None  # the result, for a page that reattaches
    return JSONResponse({"job": job.id, "kind": job.kind, "state": job.state,
                         "position": server.worker.position(job), "events": len(job.events),
                         "stream": f"/api/jobs/{job.id}/events", "final": final})


def resume_after(last_event_id: str | None, sent: int) -> int:
    """The index to resume at after ``Last-Event-ID`` (absent: 0), which must name one of the ``sent`` events."""
    if last_event_id is None or not last_event_id.strip():
        return 0
    text = last_event_id.strip()
    if not sent:
        raise ValueError(f"Last-Event-ID {quote(text)} names no event: this job has sent none yet (omit the header)")
    if not (text.isascii() and text.isdigit() and len(text) <= 12 and int(text) < sent):
        raise ValueError(f"Last-Event-ID must be an event id this job sent, an integer in 0..{sent - 1}, "
                         f"got {quote(text)}")
    return int(text) + 1


@router.get("/api/jobs/{job_id}/events")
async def events(job_id: str, request: Request, server: Server) -> Response:
    job = _job(server, job_id)
    if isinstance(job, Response):
        return job
    try:
        start = resume_after(request.headers.get("last-event-id"), len(job.events))
    except ValueError as e:
        return error(400, str(e))

    async def stream():
        nonlocal start
        job.subscribers += 1
        try:
            yield "retry: 1000\n\n"
            while True:
                batch, finished = await asyncio.to_thread(job.events_since, start, 0.5)
                for event in batch:
                    yield f"id: {start}\ndata: {json.dumps(event)}\n\n"
                    start += 1
                if finished:  # the batch held the final event (events_since reads both under one lock)
                    yield "event: end\ndata: {}\n\n"
                    return
                if not batch:
                    yield ": keep-alive\n\n"
        finally:
            job.subscribers -= 1
            if job.subscribers == 0 and not job.finished:
                _cancel_unwatched(job)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _cancel_unwatched(job: Job) -> None:
    def check():
        if job.subscribers == 0 and not job.finished:
            job.token.cancel()

    timer = threading.Timer(DISCONNECT_GRACE_S, check)
    timer.daemon = True
    timer.start()

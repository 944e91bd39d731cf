"""The page's server: ``create_app(models, out_dir)`` -> a FastAPI app (run by uvicorn in ``diffuscope serve``).

Rules (as the trusted local UIs learned them the hard way):
- Host allowlist on every request (DNS rebinding: a foreign name resolving to 127.0.0.1 gets 403).
- A foreign Origin gets 403 on every request; state-changing requests (POST) also need the random per-launch token
  the page carries (header X-Diffuscope-Token), else 403. No CORS headers are ever sent.
- No file paths in requests: outputs are served by job id and file name from inside the output folder, resolved
  and checked (no ``..``, no symlink escape), else 404.
- One worker thread runs all torch work; a full queue answers 429 with Retry-After.
- Bad parameters answer 400 with a one-line reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from diffuscope.checks.errors import UsageError, quote
from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER
from diffuscope.web import lesson
from diffuscope.web.jobs import QueueFull, Worker

TOKEN_HEADER = "x-diffuscope-token"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")
DISCONNECT_GRACE_S = 5.0  # a job whose every stream closed is cancelled after this (EventSource reconnects sooner)
_FILE_NAME = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?$")
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def _host_name(host: str) -> str:
    """'127.0.0.1:7860' -> '127.0.0.1'; '[::1]:7860' -> '[::1]'."""
    if host.startswith("["):
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _origin_host(origin: str) -> str | None:
    m = re.match(r"^https?://([^/]+)$", origin)
    return _host_name(m.group(1)).lower() if m else None


class GenerateBody(BaseModel):
    model: str = ""
    prompt: str = ""
    sampler: str = DEFAULT_SAMPLER
    steps: int = 25
    seed: int = Field(0, ge=0, le=2**32 - 1)
    guidance: float = DEFAULT_GUIDANCE  # a model without classes refuses anything but 1
    guidance_interval: tuple[float, float] | None = None
    preview_every: int = 1
    preview: str = "decode"


class ExerciseBody(BaseModel):
    model: str = ""
    prompt: str = ""
    samplers: list[str] = ["DDIM"]
    steps: str = "10,25,50,100"
    seed: int = Field(0, ge=0, le=2**32 - 1)
    guidance: float = 1.0
    n: int = 16


class PhasesBody(BaseModel):
    model: str = ""
    prompt: str = ""
    steps: int = 50
    n: int = 16
    seed: int = Field(0, ge=0, le=2**32 - 1)


class InvertBody(BaseModel):
    model: str = ""
    index: int = Field(0, ge=0)
    prompt: str = ""
    regen_prompt: str = ""
    steps: int = 50
    sampler: str = DEFAULT_SAMPLER


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(models: list[lesson.ModelEntry], out_dir: str | Path, *, queue_size: int = 4,
               allowed_hosts: tuple[str, ...] = (), token: str | None = None, worker: Worker | None = None
               ) -> FastAPI:
    """The app serving ``models`` and writing every job's files under ``out_dir/<job id>/``."""
    if not models:
        raise UsageError("give at least one model")
    out_root = Path(out_dir).resolve()
    out_root.mkdir(parents=True, exist_ok=True)
    token = token or secrets.token_urlsafe(24)
    worker = worker or Worker(queue_size)
    by_name = {m.name: m for m in models}
    hosts = {h.lower() for h in (*LOCAL_HOSTS, *allowed_hosts)}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        worker.close()  # cancel what runs, stop the thread

    app = FastAPI(title="diffuscope", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.worker, app.state.token, app.state.out_dir = worker, token, out_root
    forward_cache: dict[tuple, dict] = {}
    forward_lock = threading.Lock()

    @app.middleware("http")
    async def guard(request: Request, call_next):
        host = _host_name(request.headers.get("host", "")).lower()
        if host not in hosts:
            return _error(403, f"host {host!r} is not allowed (DNS rebinding guard); "
                               f"allowed: {', '.join(sorted(hosts))}")
        origin = request.headers.get("origin")
        if origin is not None and _origin_host(origin) not in hosts:
            return _error(403, f"origin {origin!r} is not allowed: this server answers its own page only")
        if request.headers.get("sec-fetch-site") == "cross-site":
            return _error(403, "cross-site requests are not allowed")
        if request.method in STATE_CHANGING and not secrets.compare_digest(
                request.headers.get(TOKEN_HEADER, ""), token):
            return _error(403, "missing or wrong page token: reload the page")
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(400, f"{where or 'request'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(UsageError)
    async def usage_error(request: Request, exc: UsageError):
        return _error(400, str(exc))

    def entry(name: str) -> lesson.ModelEntry:
        if not name:
            return models[0]
        if name not in by_name:
            raise UsageError(f"unknown model {quote(name)}; valid: {', '.join(by_name)}")
        return by_name[name]

    def submit(kind: str, fn) -> Response:
        try:
            job = worker.submit(kind, fn)
        except QueueFull as e:
            return _error(429, str(e), {"Retry-After": "5"})
        return JSONResponse({"job": job.id, "events": f"/api/jobs/{job.id}/events"})

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        page = resources.files("diffuscope.web").joinpath("static/index.html").read_text()
        return page.replace("__TOKEN__", token)

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        types = {"app.js": "text/javascript", "style.css": "text/css"}
        if name not in types:
            return _error(404, "not found")
        return Response(resources.files("diffuscope.web").joinpath(f"static/{name}").read_bytes(),
                        media_type=types[name])

    @app.get("/api/models")
    def list_models() -> list[dict]:
        return [m.describe() for m in models]

    @app.get("/api/forward")
    def forward(model: str = "", index: int = 0, seed: int = 0) -> Response:
        m = entry(model)
        key = (m.name, index, seed)
        with forward_lock:
            cached = forward_cache.get(key)
        if cached is None:  # cheap (milliseconds) but torch: run it on the worker and wait
            done = threading.Event()
            box: dict[str, Any] = {}

            def work(job):
                try:
                    box["result"] = lesson.forward_frames(m, index=index, seed=seed)
                except UsageError as e:
                    box["error"] = str(e)
                finally:
                    done.set()
                return {"type": "done"}

            try:
                worker.submit("forward", work)
            except QueueFull as e:
                return _error(429, str(e), {"Retry-After": "5"})
            done.wait()
            if "error" in box:
                return _error(400, box["error"])
            cached = box["result"]
            with forward_lock:
                if len(forward_cache) > 32:
                    forward_cache.clear()
                forward_cache[key] = cached
        return JSONResponse(cached)

    @app.post("/api/generate")
    def generate(body: GenerateBody) -> Response:
        m = entry(body.model)
        req = lesson.GenerateRequest(body.prompt, body.sampler, body.steps, body.seed, body.guidance,
                                     body.guidance_interval, body.preview_every, body.preview)
        lesson.check_generate(m, req)
        return submit("generate", lambda job: lesson.run_generate(m, req, out_root / job.id, job.emit, job.token))

    @app.get("/api/exercise/plan")
    def exercise_plan(model: str = "", samplers: str = "DDIM", steps: str = "10,25,50,100", n: int = 16,
                      prompt: str = "", seed: int = 0, guidance: float = 1.0) -> dict:
        req = _exercise_request(ExerciseBody(model=model, prompt=prompt, samplers=samplers.split("|"),
                                             steps=steps, seed=seed, guidance=guidance, n=n))
        config = lesson.exercise_config(entry(model), req)
        nfe = lesson.exercise_nfe(config)
        return {"nfe": nfe, "n": config.n, "image_nfe": nfe * config.n, "steps": list(config.steps),
                "reference": f"{config.reference_sampler}, {config.reference_steps} steps"}

    @app.post("/api/exercise")
    def exercise(body: ExerciseBody) -> Response:
        m = entry(body.model)
        req = _exercise_request(body)
        lesson.exercise_config(m, req)
        return submit("exercise", lambda job: lesson.run_exercise(m, req, out_root / job.id, job.emit, job.token))

    @app.post("/api/phases")
    def phases(body: PhasesBody) -> Response:
        m = entry(body.model)
        lesson.check_phases(m, prompt=body.prompt, steps=body.steps, n=body.n)
        return submit("phases", lambda job: lesson.run_phases(
            m, prompt=body.prompt, steps=body.steps, n=body.n, seed=body.seed, out=out_root / job.id,
            emit=job.emit, token=job.token))

    @app.post("/api/invert")
    def invert(body: InvertBody) -> Response:
        m = entry(body.model)
        req = lesson.InvertRequest(body.index, body.prompt, body.regen_prompt, body.steps, body.sampler)
        lesson.check_invert(m, req)
        return submit("invert", lambda job: lesson.run_invert(m, req, out_root / job.id, job.emit, job.token))

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: str) -> Response:
        job = worker.cancel(job_id)
        if job is None:
            return _error(404, f"no job {job_id}")
        return JSONResponse({"job": job.id, "state": job.state})

    @app.get("/api/jobs/{job_id}")
    def job_state(job_id: str) -> Response:
        job = worker.get(job_id)
        if job is None:
            return _error(404, f"no job {job_id}")
        return JSONResponse({"job": job.id, "kind": job.kind, "state": job.state, "events": len(job.events)})

    @app.get("/api/jobs/{job_id}/events")
    async def events(job_id: str, request: Request) -> Response:
        job = worker.get(job_id)
        if job is None:
            return _error(404, f"no job {job_id}")
        try:  # EventSource reconnects with the id of the last event it saw: resume after it
            start = int(request.headers.get("last-event-id", "-1")) + 1
        except ValueError:
            start = 0

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
                    if finished and not batch:
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

    @app.get("/api/files/{job_id}/{name:path}")
    def files(job_id: str, name: str) -> Response:
        if not _JOB_ID.match(job_id) or not _FILE_NAME.match(name):
            return _error(404, "not found")
        path = (out_root / job_id / name).resolve()
        if not path.is_relative_to(out_root / job_id) or not path.is_file():  # resolve() followed any symlink
            return _error(404, "not found")
        return FileResponse(path, media_type="image/png" if path.suffix == ".png" else None,
                            filename=path.name if path.suffix == ".png" else None)

    return app


def _cancel_unwatched(job) -> None:
    def check():
        if job.subscribers == 0 and not job.finished:
            job.token.cancel()

    timer = threading.Timer(DISCONNECT_GRACE_S, check)
    timer.daemon = True
    timer.start()


def _exercise_request(body: ExerciseBody) -> lesson.ExerciseRequest:
    from diffuscope.sweep import parse_steps

    return lesson.ExerciseRequest(body.prompt, tuple(s for s in body.samplers if s), parse_steps(body.steps),
                                  body.seed, body.guidance, body.n)

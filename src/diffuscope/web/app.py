"""The page's server: ``create_app(models, out_dir)`` -> a FastAPI app (run by uvicorn in ``diffuscope serve``).

Rules (as the trusted local UIs learned them the hard way; web/guard.py enforces the first four on every request):
- Host allowlist on every request (DNS rebinding: a foreign name resolving to 127.0.0.1 gets 403).
- A foreign Origin gets 403 on every request; state-changing requests (POST) also need the random per-launch token
  the page carries (header X-Diffuscope-Token), else 403. No CORS headers are ever sent.
- With a user's secret (required to bind beyond loopback), every request needs it (cookie or header), else 401.
- Every response carries a strict Content-Security-Policy (self only), nosniff and no-referrer.
- No file paths in requests: outputs are served by job id and file name from inside the output folder, resolved
  and checked (no ``..``, no symlink escape), else 404.
- One worker thread runs all torch work; a full queue answers 429 with Retry-After; a request that waits for the
  worker (the forward frames) has a deadline (503 with Retry-After), never hangs.
- Bad parameters answer 400 with a one-line reason; nothing a client sends gets a 5xx.

The routes live in web/routes/ (one APIRouter per section of the page); the state they share (models, job queue,
output folder, tokens) is one ``ServerState`` (web/state.py) in ``app.state.server``, reached by a dependency.
"""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path

import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError

from diffuscope.checks.errors import UsageError, quote
from diffuscope.web import lesson
from diffuscope.web.guard import LOCAL_HOSTS, error, guard
from diffuscope.web.jobs import Worker
from diffuscope.web.routes import ROUTERS
from diffuscope.web.state import ServerState


def create_app(models: list[lesson.ModelEntry], out_dir: str | Path, *, queue_size: int = 4,
               allowed_hosts: tuple[str, ...] = (), token: str | None = None, worker: Worker | None = None,
               secret: str | None = None) -> FastAPI:
    """The app serving ``models`` and writing every job's files under ``out_dir/<job id>/``. ``token`` is the page
    token (random when None); ``secret``, when given, is required of every request (cookie or header)."""
    if not models:
        raise UsageError("give at least one model")
    out_root = Path(out_dir).resolve()
    out_root.mkdir(parents=True, exist_ok=True)
    state = ServerState(models=list(models), out_dir=out_root, worker=worker or Worker(queue_size),
                        token=token or secrets.token_urlsafe(24), secret=secret,
                        hosts=frozenset(h.lower() for h in (*LOCAL_HOSTS, *allowed_hosts)))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        state.worker.close()  # cancel what runs, stop the thread

    app = FastAPI(title="diffuscope", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.server = state
    app.state.worker, app.state.token, app.state.out_dir = state.worker, state.token, state.out_dir
    app.middleware("http")(guard)
    app.add_exception_handler(RequestValidationError, _bad_request)
    app.add_exception_handler(pydantic.ValidationError, _bad_request)
    app.add_exception_handler(UsageError, _usage_error)
    for router in ROUTERS:
        app.include_router(router)
    return app


async def _bad_request(request: Request, exc: RequestValidationError | pydantic.ValidationError):
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
    given = f", got {quote(first['input'])}" if isinstance(first.get("input"), str | int | float) else ""
    return error(400, f"{where or 'request'}: {first.get('msg', 'invalid')}{given}")


async def _usage_error(request: Request, exc: UsageError):
    return error(400, str(exc))

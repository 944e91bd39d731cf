"""Section 4: what gets decided when (the phase measurements) and an image inverted to its noise and back."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field

from diffuscope.samplers.base import MAX_SEED
from diffuscope.web import claims
from diffuscope.web.lesson import SECTION_STEPS
from diffuscope.web.routes.common import submit
from diffuscope.web.state import Server

router = APIRouter()


class PhasesBody(BaseModel):
    model: str = ""
    prompt: str = ""
    steps: int | None = None  # left out: a distilled student's K, else SECTION_STEPS (models/student.py)
    n: int = 16
    seed: int = Field(0, ge=0, le=MAX_SEED)


class InvertBody(BaseModel):
    model: str = ""
    index: int = Field(0, ge=0)
    prompt: str = ""
    regen_prompt: str = ""
    steps: int | None = None  # left out: a distilled student's K (Euler, its grid), else SECTION_STEPS
    sampler: str | None = None  # left out: a distilled student's (Euler), else DEFAULT_SAMPLER


@router.post("/api/phases")
def phases(body: PhasesBody, server: Server) -> Response:
    m = server.entry(body.model)
    steps = m.resolve(steps=body.steps, fallback_steps=SECTION_STEPS).steps
    claims.check_phases(m, prompt=body.prompt, steps=steps, n=body.n)
    out = server.out_dir
    return submit(server, "phases", lambda job: claims.run_phases(
        m, prompt=body.prompt, steps=steps, n=body.n, seed=body.seed, out=out / job.id, emit=job.emit,
        token=job.token))


@router.post("/api/invert")
def invert(body: InvertBody, server: Server) -> Response:
    m = server.entry(body.model)
    chosen = m.resolve(sampler=body.sampler, steps=body.steps, fallback_steps=SECTION_STEPS)
    req = claims.InvertRequest(body.index, body.prompt, body.regen_prompt, chosen.steps, chosen.sampler)
    claims.check_invert(m, req)
    out = server.out_dir
    return submit(server, "invert", lambda job: claims.run_invert(m, req, out / job.id, job.emit, job.token))

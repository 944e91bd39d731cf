"""Section 4: what gets decided when (the phase measurements) and an image inverted to its noise and back."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field

from diffuscope.core.defaults import DEFAULT_SAMPLER
from diffuscope.samplers.base import MAX_SEED
from diffuscope.web import claims
from diffuscope.web.routes.common import submit
from diffuscope.web.state import Server

router = APIRouter()


class PhasesBody(BaseModel):
    model: str = ""
    prompt: str = ""
    steps: int = 50
    n: int = 16
    seed: int = Field(0, ge=0, le=MAX_SEED)


class InvertBody(BaseModel):
    model: str = ""
    index: int = Field(0, ge=0)
    prompt: str = ""
    regen_prompt: str = ""
    steps: int = 50
    sampler: str = DEFAULT_SAMPLER


@router.post("/api/phases")
def phases(body: PhasesBody, server: Server) -> Response:
    m = server.entry(body.model)
    claims.check_phases(m, prompt=body.prompt, steps=body.steps, n=body.n)
    out = server.out_dir
    return submit(server, "phases", lambda job: claims.run_phases(
        m, prompt=body.prompt, steps=body.steps, n=body.n, seed=body.seed, out=out / job.id, emit=job.emit,
        token=job.token))


@router.post("/api/invert")
def invert(body: InvertBody, server: Server) -> Response:
    m = server.entry(body.model)
    req = claims.InvertRequest(body.index, body.prompt, body.regen_prompt, body.steps, body.sampler)
    claims.check_invert(m, req)
    out = server.out_dir
    return submit(server, "invert", lambda job: claims.run_invert(m, req, out / job.id, job.emit, job.token))

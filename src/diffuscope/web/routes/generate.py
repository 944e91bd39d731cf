"""Section 2: one image, generated live (its steps and previews arrive as server-sent events, routes/jobs.py)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field

from diffuscope.samplers.base import MAX_SEED
from diffuscope.web import processes
from diffuscope.web.routes.common import check_guidance, submit
from diffuscope.web.state import Server

router = APIRouter()


class GenerateBody(BaseModel):
    model: str = ""
    prompt: str = ""
    # left out: the model's own (a distilled student's K steps, Euler, guidance 1; models/student.py), else
    # DEFAULT_SAMPLER, DEFAULT_STEPS and DEFAULT_GUIDANCE (1 for a model without classes, which refuses any other)
    sampler: str | None = None
    steps: int | None = None
    seed: int = Field(0, ge=0, le=MAX_SEED)
    guidance: float | None = None
    guidance_interval: tuple[float, float] | None = None
    preview_every: int = 1
    preview: str = "decode"


@router.post("/api/generate")
def generate(body: GenerateBody, server: Server) -> Response:
    m = server.entry(body.model)
    chosen = m.resolve(sampler=body.sampler, steps=body.steps, guidance=body.guidance)
    req = processes.GenerateRequest(body.prompt, chosen.sampler, chosen.steps, body.seed, chosen.guidance,
                                    body.guidance_interval, body.preview_every, body.preview)
    processes.check_generate(m, req)
    check_guidance(chosen.guidance)
    out = server.out_dir
    return submit(server, "generate", lambda job: processes.run_generate(m, req, out / job.id, job.emit, job.token),
                  prompt_note=m.prompt_note(body.prompt))


@router.get("/api/prompt-check")
def prompt_check(server: Server, model: str = "", prompt: str = "") -> dict:
    """Cheap (no network call): ``prompt_note`` = None for a trained prompt, else one sentence naming the nearest
    trained prompts or the words past the text encoder's window."""
    from diffuscope.checks import validate

    m = server.entry(model)
    text = validate.prompt(prompt) if prompt.strip() else ""
    return {"model": m.name, "prompt": text, "prompt_note": m.prompt_note(text)}

"""Section 2: one image, generated live (its steps and previews arrive as server-sent events, routes/jobs.py)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field

from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS
from diffuscope.samplers.base import MAX_SEED
from diffuscope.web import processes
from diffuscope.web.routes.common import check_guidance, submit
from diffuscope.web.state import Server

router = APIRouter()


class GenerateBody(BaseModel):
    model: str = ""
    prompt: str = ""
    sampler: str = DEFAULT_SAMPLER
    steps: int = DEFAULT_STEPS
    seed: int = Field(0, ge=0, le=MAX_SEED)
    guidance: float = DEFAULT_GUIDANCE  # a model without classes refuses anything but 1
    guidance_interval: tuple[float, float] | None = None
    preview_every: int = 1
    preview: str = "decode"


@router.post("/api/generate")
def generate(body: GenerateBody, server: Server) -> Response:
    m = server.entry(body.model)
    req = processes.GenerateRequest(body.prompt, body.sampler, body.steps, body.seed, body.guidance,
                                    body.guidance_interval, body.preview_every, body.preview)
    processes.check_generate(m, req)
    check_guidance(body.guidance)
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

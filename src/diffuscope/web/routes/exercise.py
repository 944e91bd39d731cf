"""Section 3: the exercise (the same prompt and seed at several step counts): its plan before it runs, then the job."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field

from diffuscope.samplers.base import MAX_SEED
from diffuscope.web import lesson
from diffuscope.web.routes.common import check_seed, submit
from diffuscope.web.state import Server

router = APIRouter()


class ExerciseBody(BaseModel):
    model: str = ""
    prompt: str = ""
    samplers: list[str] = ["DDIM"]
    steps: str = "10,25,50,100"
    seed: int = Field(0, ge=0, le=MAX_SEED)
    guidance: float = 1.0
    n: int = 16


def _request(body: ExerciseBody) -> lesson.ExerciseRequest:
    from diffuscope.sweep import parse_steps

    return lesson.ExerciseRequest(body.prompt, tuple(s for s in body.samplers if s), parse_steps(body.steps),
                                  body.seed, body.guidance, body.n)


@router.get("/api/exercise/plan")
def exercise_plan(server: Server, model: str = "", samplers: str = "DDIM", steps: str = "10,25,50,100", n: int = 16,
                  prompt: str = "", seed: int = 0, guidance: float = 1.0) -> dict:
    req = _request(ExerciseBody(model=model, prompt=prompt, samplers=samplers.split("|"), steps=steps,
                                seed=check_seed(seed), guidance=guidance, n=n))
    config = lesson.exercise_config(server.entry(model), req)
    nfe = lesson.exercise_nfe(config)
    return {"nfe": nfe, "n": config.n, "image_nfe": nfe * config.n, "steps": list(config.steps),
            "reference": f"{config.reference_sampler}, {config.reference_steps} steps"}


@router.post("/api/exercise")
def exercise(body: ExerciseBody, server: Server) -> Response:
    m = server.entry(body.model)
    req = _request(body)
    lesson.exercise_config(m, req)
    out = server.out_dir
    return submit(server, "exercise", lambda job: lesson.run_exercise(m, req, out / job.id, job.emit, job.token))

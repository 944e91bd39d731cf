"""Section 3: the exercise (the same prompt and seed at several step counts): its plan before it runs, then the job."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field

from diffuscope.samplers.base import MAX_SEED
from diffuscope.web import exercise as ex  # its calls into the library (``exercise`` below is the route)
from diffuscope.web.lesson import EXERCISE_STEPS
from diffuscope.web.routes.common import check_seed, submit
from diffuscope.web.state import Server

router = APIRouter()


DEFAULT_STEPS = ",".join(map(str, EXERCISE_STEPS))  # 1,2,3,5,10,25,50,100: where the picture breaks, too
AXES_X = ("steps",)  # columns: step counts; rows (axis_y): ex.AXES_Y


class ExerciseBody(BaseModel):
    model: str = ""
    prompt: str = ""
    samplers: list[str] = ["DDIM"]
    steps: str = DEFAULT_STEPS
    seed: int = Field(0, ge=0, le=MAX_SEED)
    guidance: float = 1.0
    n: int = 16
    axis_x: str = "steps"
    axis_y: str = "sampler"
    axis_y_values: str = ""


def _request(body: ExerciseBody) -> ex.ExerciseRequest:
    from diffuscope.checks.errors import UsageError, quote
    from diffuscope.sweep import parse_steps

    if body.axis_x not in AXES_X:
        raise UsageError(f"axis_x must be one of {', '.join(AXES_X)}, got {quote(body.axis_x)}")
    return ex.ExerciseRequest(body.prompt, tuple(s for s in body.samplers if s), parse_steps(body.steps),
                              body.seed, body.guidance, body.n, body.axis_y,
                              ex.y_values(body.axis_y, body.axis_y_values))


@router.get("/api/exercise/plan")
def exercise_plan(server: Server, model: str = "", samplers: str = "DDIM", steps: str = DEFAULT_STEPS, n: int = 16,
                  prompt: str = "", seed: int = 0, guidance: float = 1.0, axis_x: str = "steps",
                  axis_y: str = "sampler", axis_y_values: str = "") -> dict:
    req = _request(ExerciseBody(model=model, prompt=prompt, samplers=samplers.split("|"), steps=steps,
                                seed=check_seed(seed), guidance=guidance, n=n, axis_x=axis_x, axis_y=axis_y,
                                axis_y_values=axis_y_values))
    entry = server.entry(model)
    rows = ex.exercise_rows(entry, req)
    config = rows[0][1]
    nfe = sum(ex.exercise_nfe(c) for _, c in rows)
    cells = sum(len(c.samplers) * len(c.steps) for _, c in rows)
    return {"nfe": nfe, "n": config.n, "image_nfe": nfe * config.n, "steps": list(config.steps),
            "axis_x": "steps", "axis_y": req.axis_y, "rows": [label for label, _ in rows if label is not None],
            "highlight": [k for k in ex.LESSON_STEPS if k in config.steps], "cells": cells,
            "total": cells + len(rows),
            "reference": f"{config.reference_sampler}, {config.reference_steps} steps",
            "prompt_note": entry.prompt_note(prompt)}


@router.post("/api/exercise")
def exercise(body: ExerciseBody, server: Server) -> Response:
    m = server.entry(body.model)
    req = _request(body)
    ex.exercise_rows(m, req)
    out = server.out_dir
    return submit(server, "exercise", lambda job: ex.run_exercise(m, req, out / job.id, job.emit, job.token),
                  prompt_note=m.prompt_note(body.prompt))

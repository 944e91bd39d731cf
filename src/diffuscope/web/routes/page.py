"""The page itself (HTML with the page token, the script, the style sheet), the models it offers and the limits
and defaults it fills its fields with (one source of truth: the server's)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from diffuscope.checks import limits
from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS
from diffuscope.samplers.base import MAX_SEED
from diffuscope.web import exercise, lesson
from diffuscope.web.guard import error
from diffuscope.web.state import Server

router = APIRouter()
STATIC_TYPES = {"app.js": "text/javascript", "style.css": "text/css"}


@router.get("/", response_class=HTMLResponse)
def index(server: Server) -> str:
    page = resources.files("diffuscope.web").joinpath("static/index.html").read_text()
    return page.replace("__TOKEN__", server.token)


@router.get("/static/{name}")
def static(name: str) -> Response:
    if name not in STATIC_TYPES:
        return error(404, "not found")
    return Response(resources.files("diffuscope.web").joinpath(f"static/{name}").read_bytes(),
                    media_type=STATIC_TYPES[name])


@router.get("/api/models")
def list_models(server: Server) -> list[dict]:
    return [m.describe() for m in server.models]


@router.get("/api/info")
def info() -> dict:
    """The bounds every request is checked against and the defaults the page starts from."""
    return {"limits": {"max_steps": lesson.MAX_STEPS, "max_seed": MAX_SEED, "max_guidance": limits.MAX_GUIDANCE,
                       "max_exercise_n": exercise.MAX_EXERCISE_N, "max_exercise_cells": exercise.MAX_EXERCISE_CELLS,
                       "max_exercise_image_nfe": exercise.MAX_EXERCISE_IMAGE_NFE,
                       "max_prompt_chars": limits.MAX_PROMPT_CHARS},
            "defaults": {"steps": DEFAULT_STEPS, "sampler": DEFAULT_SAMPLER, "guidance": DEFAULT_GUIDANCE}}

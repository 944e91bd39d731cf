"""Several models in one sweep (issue 32): a distilled student side by side with its teacher.

    result = sweep_models([SweepModel("mnist", "mnist", teacher_config),
                           SweepModel("mnist-4step", "runs/mnist-4step", student_config)])
    result.cell("mnist-4step · Euler", 4).metrics["conv_pixel"]   # RMSE to the *teacher's* converged images

Each model is a *series* of rows labelled "model · sampler", swept with its own steps, samplers, guidance and
spacing (a student's K steps, Euler on its own grid, guidance 1) and everything else shared: the prompts, the seeds
(image i from seed + i, the same noise in every cell of every model), n and the metrics. The first model is the
reference: its evaluator measures every model, and its high-NFE reference run is what every model's convergence is
measured against, so a student's convergence says how far its images are from its teacher's converged images from
the same noise. The models must make images of one shape from the same kind of prompts (one-line UsageError
otherwise, before any image is generated).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from diffuscope.checks import limits
from diffuscope.checks.errors import UsageError, quote
from diffuscope.sweep.config import SweepConfig

SEPARATOR = " · "  # between a model's name and a sampler in a row label: "mnist-4step · Euler"
# what may differ between the models of one sweep; every other SweepConfig field is shared
PER_MODEL = ("steps", "samplers", "guidance", "guidance_interval", "spacing")


@dataclass(frozen=True)
class SweepModel:
    """One model of a side-by-side sweep: its name (the rows' prefix), the model (anything ``sweep`` takes: a
    folder, a built-in name, a DiffusionModel or SweepInputs) and its config."""

    name: str
    model: Any
    config: SweepConfig


def row_label(model_name: str | None, row: str) -> str:
    """A cell's row label: the sampler row alone for one model, "model · sampler" beside others."""
    return row if not model_name else f"{model_name}{SEPARATOR}{row}"


def check_models(models: list[SweepModel]) -> None:
    """1..MAX_SWEEP_MODELS models with distinct non-empty names, sharing every setting but PER_MODEL ones."""
    if not models:
        raise UsageError("give at least one model to sweep")
    if len(models) > limits.MAX_SWEEP_MODELS:
        raise UsageError(f"{len(models)} models given: at most {limits.MAX_SWEEP_MODELS} side by side")
    names = [m.name for m in models]
    if len(models) > 1 and any(not str(n).strip() for n in names):
        raise UsageError("every model of a side-by-side sweep needs a name (its rows' label)")
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise UsageError(f"model name {quote(twice)} is given twice: each model once, under its own name")
    first = models[0].config
    for m in models[1:]:
        for f in fields(SweepConfig):
            if f.name not in PER_MODEL and getattr(m.config, f.name) != getattr(first, f.name):
                raise UsageError(f"model {quote(m.name)} has its own {f.name}: the models of one sweep share "
                                 f"everything but {', '.join(PER_MODEL)}")


def check_compatible(first_name: str, first, name: str, other) -> None:
    """Two models (DiffusionModel) can be swept side by side: the same image shape and the same prompts (the same
    kind of conditioning, and for class models the same classes); a one-line UsageError otherwise."""
    shape, other_shape = tuple(first.image_shape), tuple(other.image_shape)
    if shape != other_shape:
        raise UsageError(f"{quote(name)} makes {'x'.join(map(str, other_shape))} images, {quote(first_name)} "
                         f"{'x'.join(map(str, shape))}: models swept side by side must share the image shape")
    a, b = first.conditioner, other.conditioner
    if not a.takes_same_prompts(b):
        raise UsageError(f"{quote(name)} takes {b.describe()}, {quote(first_name)} {a.describe()}: models swept "
                         f"side by side must take the same prompts")


def model_record(name: str, config: SweepConfig, inputs, request, rows: list[str]) -> dict[str, Any]:
    """One model's entry in SweepResult.models (report.json "models", the report's set-up)."""
    from diffuscope.models.student import student_defaults

    student = student_defaults(inputs.model) if inputs.model is not None else None
    info = inputs.info
    return {"name": name, "model_name": info.get("model_name", name), "model_path": info.get("model_path"),
            "model_step": info.get("model_step"), "student_of": student.teacher if student else None,
            "steps": list(config.steps), "samplers": list(config.samplers), "spacing": config.spacing,
            "guidance_used": request.guidance,
            "guidance_interval_used": (None if request.guidance == 1 or request.guidance_interval is None
                                       else list(request.guidance_interval)),
            "rows": rows}


def series_names(models, refs: list[str]) -> list[str]:
    """The rows' prefix of each model: its name (``DiffusionModel.name``), or what named it (``refs``: the folder or
    built-in name given) where two models share a name."""
    names = [str(getattr(m, "name", "") or r) for m, r in zip(models, refs)]
    return [n if names.count(n) == 1 else str(r) for n, r in zip(names, refs)]

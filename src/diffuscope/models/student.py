"""A distilled student's sampling defaults (training/distill.py, issue 32): the ``student`` record of its run config.

A student learned the teacher's guided ODE solution on one K-step grid with one sampler (Euler), so that is how it
samples unless told otherwise: ``sample`` and ``sweep`` take K steps, Euler, its own grid (stored as the model's
tuned Euler grid at K steps) and guidance 1 by default. Another step count or sampler falls back to the model's
default grid (the student's own grid exists only at K steps).
"""

from __future__ import annotations

from dataclasses import dataclass

from diffuscope.checks import limits, validate
from diffuscope.checks.errors import UsageError
from diffuscope.core.schedules import GRIDS
from diffuscope.samplers import get_sampler


@dataclass(frozen=True)
class StudentDefaults:
    steps: int  # K
    sampler: str  # display name (Euler)
    spacing: str  # "tuned": the student's own grid, in its tuned_grids.json
    guidance: float  # 1: the guidance is distilled into the student
    teacher: str  # the teacher's name (for messages)

    def spacing_for(self, sampler: str, steps: int) -> str | None:
        """The student's own spacing where (sampler, steps) is what it was distilled for; else None (the model's
        default formula grid)."""
        same = get_sampler(sampler).id == get_sampler(self.sampler).id and steps == self.steps
        return self.spacing if same else None


def student_defaults(model) -> StudentDefaults | None:
    """The defaults of a distilled student (a DiffusionModel whose run config has a ``student`` record), checked
    in one line naming the field; None for any other model."""
    return _parse(getattr(model, "run_config", None) or {}, getattr(model, "path", None))


def _parse(run_config: dict, path) -> StudentDefaults | None:
    raw = run_config.get("student")
    if raw is None:
        return None
    where = f"{path or 'model'}/config.json: run.student"
    validate.expect(raw, dict, where, "the record")
    steps = validate.int_in(raw.get("steps"), where, "steps", 1, limits.MAX_STEPS)
    sampler = validate.expect(raw.get("sampler"), str, where, "sampler")
    spacing = validate.expect(raw.get("spacing"), str, where, "spacing")
    if spacing not in GRIDS:
        raise UsageError(f"{where}: unknown spacing {spacing!r} (valid: {', '.join(GRIDS)})")
    guidance = validate.finite_number(raw.get("guidance", 1.0), where, "guidance", 0, limits.MAX_GUIDANCE)
    teacher = raw.get("teacher") if isinstance(raw.get("teacher"), dict) else {}
    return StudentDefaults(steps, get_sampler(sampler).name, spacing, float(guidance), str(teacher.get("name", "")))


def student_defaults_at(ref) -> StudentDefaults | None:
    """``student_defaults`` of the model ``ref`` names (a built-in name, run or checkpoint folder), from its
    config.json alone, before any weights load (the sweep resolves its defaults first); None for a diffusers
    pipeline folder, a model that is not a student, or one that cannot be read (its load reports that)."""
    from pathlib import Path

    from diffuscope.io.checkpoint import resolve_checkpoint
    from diffuscope.models.load import load_config

    if (Path(ref) / "model_index.json").is_file():
        return None
    try:
        ckpt = resolve_checkpoint(ref)
        _, run = load_config(ckpt)
    except UsageError:  # not there or unreadable: the command's own load says so, after its --out check
        return None
    return _parse(run, ckpt)

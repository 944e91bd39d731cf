"""A distilled student's sampling defaults (training/distill.py, issue 32): the ``student`` record of its run config,
and the one rule every command and the page resolve their sampling settings by (``resolve_sampling``).

A student learned the teacher's guided ODE solution on one K-step grid with one sampler (Euler), so that is how it
samples unless told otherwise: ``sample``, ``sweep``, ``reverse``, ``phases``, ``invert`` and the page take K steps,
Euler, its own grid (stored as the model's tuned Euler grid at K steps) and guidance 1 by default. Another step count
or sampler falls back to the model's default grid (the student's own grid exists only at K steps).
"""

from __future__ import annotations

from dataclasses import dataclass

from diffuscope.checks import limits, validate
from diffuscope.checks.errors import UsageError
from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS
from diffuscope.core.schedules import GRIDS
from diffuscope.samplers import get_sampler


@dataclass(frozen=True)
class StudentDefaults:
    steps: int  # K
    sampler: str  # display name (Euler)
    spacing: str  # "tuned": the student's own grid, in its tuned_grids.json
    guidance: float  # 1: the guidance is distilled into the student
    teacher: str  # the teacher's name (for messages)
    teacher_sha256: str = ""  # the teacher's EMA weights, as the run recorded them

    def spacing_for(self, sampler: str, steps: int) -> str | None:
        """The student's own spacing where (sampler, steps) is what it was distilled for; else None (the model's
        default formula grid)."""
        same = get_sampler(sampler).id == get_sampler(self.sampler).id and steps == self.steps
        return self.spacing if same else None

    def describe(self) -> str:
        """One line: what the student is and how it samples by default (``diffuscope info --model``)."""
        sha = f" (weights sha256 {self.teacher_sha256[:12]})" if self.teacher_sha256 else ""
        return (f"a {self.steps}-step student of {self.teacher or 'an unnamed teacher'}{sha}: by default it samples "
                f"with {self.sampler} on its own {self.steps}-step grid ({self.spacing}), guidance {self.guidance:g}")


def student_defaults(model) -> StudentDefaults | None:
    """The defaults of a distilled student (a DiffusionModel whose run config has a ``student`` record), checked
    in one line naming the field; None for any other model."""
    return parse_student(getattr(model, "run_config", None) or {}, getattr(model, "path", None))


def parse_student(run_config: dict, path) -> StudentDefaults | None:
    """The ``student`` record of a run config (``path``: where it was read, for messages), checked; None if none."""
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
    return StudentDefaults(steps, get_sampler(sampler).name, spacing, float(guidance), str(teacher.get("name", "")),
                           str(teacher.get("sha256", "")))


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
    return parse_student(run, ckpt)


# --- the one rule: what the user gave, else the student's, else the command's own defaults ----------------------


@dataclass(frozen=True)
class Sampling:
    """Sampling settings: what a command samples with, or (as ``fallback``) its own defaults for other models.
    ``guidance`` None: the model's (DEFAULT_GUIDANCE with a null condition, else 1); ``spacing`` None: the model's
    default formula grid."""

    sampler: str = DEFAULT_SAMPLER
    steps: int = DEFAULT_STEPS
    spacing: str | None = None
    guidance: float | None = None
    student: StudentDefaults | None = None  # the student whose defaults were used (None: not a student)

    def grid(self, model, params: dict | None = None):
        """The explicit sigma grid for ``model`` (a DiffusionModel): its tuned grid (a student's own) when
        ``spacing`` is "tuned", else None (``make_grid`` with ``spacing``); ``params``: a PNG's (``sample --from``)."""
        from diffuscope.grids.store import grid_for_sample

        return grid_for_sample(model.path, self.sampler, self.steps, self.spacing, params)


def resolve_sampling(model, *, sampler: str | None = None, steps: int | None = None, spacing: str | None = None,
                     guidance: float | None = None, fallback: Sampling = Sampling()) -> Sampling:
    """The sampler, steps, spacing and guidance a command or the page samples ``model`` with: each one the user
    gave (not None), else a distilled student's (its K steps, Euler, its own grid at exactly those, guidance 1),
    else ``fallback``'s (the command's own defaults). ``model`` is a DiffusionModel (its record is read), the
    StudentDefaults already read (``student_defaults_at``, before weights load) or None. A fallback guidance of
    None becomes DEFAULT_GUIDANCE for a model with a null condition, else 1; with a non-model ``model`` it stays
    None (the caller's rule)."""
    student = model if isinstance(model, StudentDefaults) else None if model is None else student_defaults(model)
    sampler = sampler if sampler is not None else student.sampler if student else fallback.sampler
    steps = steps if steps is not None else student.steps if student else fallback.steps
    if spacing is None:
        spacing = student.spacing_for(sampler, steps) if student else fallback.spacing
    if guidance is None:
        guidance = student.guidance if student else fallback.guidance
    conditioner = getattr(model, "conditioner", None)
    if guidance is None and conditioner is not None:
        guidance = DEFAULT_GUIDANCE if conditioner.has_null else 1.0
    return Sampling(sampler, steps, spacing, guidance, student)

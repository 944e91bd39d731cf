"""The lesson's claims, answered live: what gets decided when (the phase measures of ``diffuscope phases``, a
verdict each) and that any image is reachable from noise (``diffuscope invert`` on a real image)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from diffuscope.checks.errors import UsageError
from diffuscope.core.events import CancelToken
from diffuscope.web.exercise import MAX_EXERCISE_N
from diffuscope.web.lesson import Emit, ModelEntry, check_index, checked_model, model_device

# --- 4. what gets decided when ---------------------------------------------------------------------------------


def check_phases(entry: ModelEntry, *, prompt: str, steps: int, n: int) -> None:
    limit = entry.describe()["max_steps"]
    if not 2 <= steps <= limit:
        raise UsageError(f"steps must be in 2..{limit}, got {steps}")
    if not 1 <= n <= MAX_EXERCISE_N:
        raise UsageError(f"n must be in 1..{MAX_EXERCISE_N}, got {n}")
    entry.prompt(prompt)


def run_phases(entry: ModelEntry, *, prompt: str, steps: int, n: int, seed: int, out: Path, emit: Emit,
               token: CancelToken) -> dict:
    """The phase measures (``diffuscope phases``) with the lesson's claims and a one-line verdict each."""
    from diffuscope.lesson.phases_report import PhasesConfig, measure_phases, save_phases
    from diffuscope.lesson.verdicts import explained_verdicts

    check_phases(entry, prompt=prompt, steps=steps, n=n)
    chosen = entry.resolve(steps=steps)  # a distilled student: Euler on its own grid at its K, guidance 1
    emit({"type": "plan", "message": f"{steps} steps of {chosen.sampler}, {n} images"})
    config = PhasesConfig(prompt=prompt or None, steps=steps, n=n, seed=seed, points=min(8, steps),
                          consistency_steps=tuple(sorted({max(1, steps // 5), steps // 2, steps})),
                          sampler=chosen.sampler, spacing=chosen.spacing, grid=chosen.grid(entry.model),
                          guidance=chosen.guidance if prompt else None)
    freq, commit, consist, notes = measure_phases(checked_model(entry, token), config, device=model_device(entry))
    paths, summary = save_phases(out, freq=freq, commit=commit, consist=consist, notes=notes)
    verdicts = explained_verdicts(freq, commit, one_image_per_prompt=entry.one_image_per_prompt and bool(prompt))
    return {"type": "done", "verdicts": [v.to_dict() for v in verdicts], "summary": summary,
            "plots": [p.name for p in paths if p.suffix == ".png"]}


# --- 4b. any image is reachable from noise: inversion ------------------------------------------------------------


@dataclass(frozen=True)
class InvertRequest:
    index: int  # a real test image of the model's data
    prompt: str  # "" = the image's own label (class or caption)
    regen_prompt: str  # "" = the same prompt (a reconstruction); another = the simplest edit
    steps: int
    sampler: str


def _test_image(entry: ModelEntry, index: int) -> tuple[torch.Tensor, str]:
    test = entry.real_set
    check_index(entry, index)
    return test.images[index][None], test.class_names[int(test.labels[index])]


def check_invert(entry: ModelEntry, req: InvertRequest) -> None:
    from diffuscope.samplers import get_sampler
    from diffuscope.samplers.steppers import stepper

    limit = entry.describe()["max_steps"]
    if not 2 <= req.steps <= limit:
        raise UsageError(f"steps must be in 2..{limit}, got {req.steps}")
    check_index(entry, req.index)
    stepper(get_sampler(req.sampler).name)  # one that has an upward step
    for prompt in (req.prompt, req.regen_prompt):
        if prompt:
            entry.prompt(prompt)


def run_invert(entry: ModelEntry, req: InvertRequest, out: Path, emit: Emit, token: CancelToken) -> dict:
    """``diffuscope invert`` on real test image ``req.index``: its inverted noise, the regenerated image and the
    lesson's claim answered in one sentence; the same files as the CLI in ``out``."""
    from diffuscope.generation.generate import GenerationRequest
    from diffuscope.lesson.inversion_report import invert_image, reachability, save_inversion

    check_invert(entry, req)
    image, label = _test_image(entry, req.index)
    prompt = (req.prompt or label) if entry.model.conditioner.takes_prompts else None
    emit({"type": "plan", "message": f"{req.steps} steps up to the noise and {req.steps} back down "
                                     f"({2 * req.steps - 1} NFE)"})
    chosen = entry.resolve(sampler=req.sampler, steps=req.steps)  # a student's own grid at its K Euler steps
    request = GenerationRequest(prompts=(prompt,), sampler=req.sampler, steps=req.steps, spacing=chosen.spacing,
                                grid=chosen.grid(entry.model), device=model_device(entry))
    result = invert_image(checked_model(entry, token), image, request, regen_prompt=req.regen_prompt or None)
    save_inversion(result, out, model=entry.ref, image=f"{entry.data} test image {req.index}")
    return {"type": "done", "answer": reachability(result), "report": result.report(), "label": label,
            "files": {"original": "original.png", "noise": "noise.png", "regenerated": "regenerated.png",
                      "noise_tensor": "noise.safetensors", "json": "invert.json"}}

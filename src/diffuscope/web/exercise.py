"""The page's exercise: samplers (or one sampler at several seeds, guidance scales or spacings) x step counts,
one sweep per row against its own reference run, a cell event with its images and difference image as each cell is
done, and each row's answer in the lesson's words. A cancelled exercise ends in no answer."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffuscope.checks import limits
from diffuscope.checks.errors import UsageError, quote
from diffuscope.core.events import CancelToken
from diffuscope.web.lesson import Emit, ModelEntry, checked_model, data_url, model_device

MAX_EXERCISE_N = 64  # images per exercise cell
MAX_EXERCISE_CELLS = 32  # samplers x step counts
MAX_EXERCISE_IMAGE_NFE = 200_000  # n x total NFE: about 10 minutes of a small CPU model
LESSON_STEPS = (10, 25, 50, 100)  # the lesson's step counts, highlighted on the page


# --- 3. the exercise -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExerciseRequest:
    prompt: str
    samplers: tuple[str, ...]
    steps: tuple[int, ...]
    seed: int
    guidance: float
    n: int
    axis_y: str = "sampler"  # the rows: samplers, or one sampler (the first) at each of ``y_values``
    y_values: tuple = ()  # seeds (int), guidance scales (float) or spacings (str)


AXES_Y = ("sampler", "seed", "guidance", "spacing")  # the rows, as A1111's X/Y plot (columns are step counts)
MAX_Y_VALUES = 8


def y_values(axis: str, text: str) -> tuple:
    """The row values of a y axis other than "sampler", parsed and checked (one line when bad)."""
    from diffuscope.checks import validate
    from diffuscope.core.schedules import GRIDS
    from diffuscope.samplers.base import MAX_SEED

    if axis not in AXES_Y:
        raise UsageError(f"axis_y must be one of {', '.join(AXES_Y)}, got {quote(axis)}")
    items = [v.strip() for v in str(text).split(",") if v.strip()]
    if axis == "sampler":
        return ()
    if not items:
        raise UsageError(f"axis_y {axis} needs values, e.g. " + {"seed": "0,1,2", "guidance": "1,1.5,2.5",
                                                                  "spacing": "karras,uniform"}[axis])
    if len(items) > MAX_Y_VALUES:
        raise UsageError(f"at most {MAX_Y_VALUES} {axis} values, got {len(items)}")
    if axis == "seed":
        values = tuple(validate.integer(v, "seed", 0, MAX_SEED) for v in items)
    elif axis == "guidance":
        values = tuple(validate.number(v, "guidance", 0, limits.MAX_GUIDANCE) for v in items)
    else:
        bad = next((v for v in items if v not in GRIDS), None)
        if bad is not None:
            raise UsageError(f"unknown spacing {quote(bad)}; valid: {', '.join(GRIDS)}")
        values = tuple(items)
    if len(set(values)) != len(values):
        raise UsageError(f"repeated {axis} values: {', '.join(items)}")
    return values


def exercise_rows(entry: ModelEntry, req: ExerciseRequest) -> list[tuple[str | None, Any]]:
    """(row label, SweepConfig) per row: one sweep of every sampler (label None: its samplers are the rows), or one
    sweep of the first sampler per y value, each with its own reference from its own noise."""
    from dataclasses import replace as with_

    base = exercise_config(entry, req)
    if req.axis_y == "sampler":
        return [(None, base)]
    if len(req.y_values) * len(base.steps) > MAX_EXERCISE_CELLS:
        raise UsageError(f"{len(req.y_values)} {req.axis_y} values x {len(base.steps)} step counts is more than "
                         f"{MAX_EXERCISE_CELLS} cells")
    field_name = {"seed": "seed", "guidance": "guidance", "spacing": "spacing"}[req.axis_y]
    if req.axis_y == "guidance" and not entry.has_null and any(v != 1 for v in req.y_values):
        raise UsageError(f"model {entry.name} has no classes: guidance must be 1")
    rows = [(_y_label(v), with_(base, samplers=base.samplers[:1], **{field_name: v})) for v in req.y_values]
    if req.axis_y == "spacing":
        from diffuscope.core.schedules import make_grid

        for _, config in rows:  # a spacing this model cannot use is refused before the job is queued
            make_grid(entry.model.denoiser.schedule, config.steps[0], config.spacing)
    nfe = sum(exercise_nfe(c) for _, c in rows)
    if nfe * base.n > MAX_EXERCISE_IMAGE_NFE:
        raise UsageError(f"this exercise needs {nfe} NFE x {base.n} images = {nfe * base.n} image-NFE, more "
                         f"than the page's limit of {MAX_EXERCISE_IMAGE_NFE}: fewer steps, values or images")
    return rows


def _y_label(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def exercise_config(entry: ModelEntry, req: ExerciseRequest):
    """The SweepConfig of an exercise: the demo's choices (a DPM++ 2M reference at 1.5x the largest step count,
    capped at T), checked against the page's limits."""
    from diffuscope.sweep import SweepConfig, check_config

    if not req.samplers:
        raise UsageError("pick at least one sampler")
    if not 1 <= req.n <= MAX_EXERCISE_N:
        raise UsageError(f"n must be in 1..{MAX_EXERCISE_N}, got {req.n}")
    if len(req.samplers) * len(req.steps) > MAX_EXERCISE_CELLS:
        raise UsageError(f"{len(req.samplers)} samplers x {len(req.steps)} step counts is more than "
                         f"{MAX_EXERCISE_CELLS} cells")
    limit = entry.describe()["max_steps"]
    if max(req.steps) > limit:
        raise UsageError(f"steps must be in 1..{limit}, got {max(req.steps)}")
    ref_steps = max(req.steps) * 3 // 2 + 1
    if entry.model.denoiser.schedule.is_discrete:
        ref_steps = min(ref_steps, entry.model.denoiser.schedule.num_timesteps)
    guidance = req.guidance if entry.has_null else 1.0
    config = SweepConfig(steps=tuple(sorted(set(req.steps))), samplers=req.samplers, prompts=(req.prompt,) if
                         req.prompt else (), seed=req.seed, n=req.n, guidance=guidance,
                         reference_sampler="DPM++ 2M", reference_steps=ref_steps, ci_resamples=50)
    check_config(config)
    entry.prompt(req.prompt)
    nfe = exercise_nfe(config)
    if nfe * config.n > MAX_EXERCISE_IMAGE_NFE:
        raise UsageError(f"this exercise needs {nfe} NFE x {config.n} images = {nfe * config.n} image-NFE, more "
                         f"than the page's limit of {MAX_EXERCISE_IMAGE_NFE}: fewer steps, samplers or images")
    return config


def exercise_nfe(config) -> int:
    """Network evaluations of the whole exercise per image batch: the reference and every cell."""
    from diffuscope.samplers import get_sampler

    cells = sum(get_sampler(s).nfe(k) for s in config.samplers for k in config.steps)
    return get_sampler(config.reference_sampler).nfe(config.reference_steps) + cells


DIFF_GAIN = 8  # the difference images' amplification: |x - x_ref| x 8, so white = 255 / 8 = 32 grey levels
DIFF_SCALE = f"x{DIFF_GAIN}: white = {255 // DIFF_GAIN} grey levels or more, black = the same"


def diff_image(image: torch.Tensor, reference: torch.Tensor):
    """|x - x_ref| (both [C, H, W] in [-1, 1]) in 8-bit grey levels, amplified DIFF_GAIN times, as a PIL image."""
    from PIL import Image

    levels = (image.float() - reference.float()).abs() * 127.5 * DIFF_GAIN
    pixels = levels.clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)


def cancelled_event(done: int, cells: int, rows, *, references: int = 1, references_done: int = 0) -> dict:
    """The final event of a cancelled exercise: no partial answer that reads as final (progress counts the
    reference runs)."""
    headline = f"cancelled after {done} of {cells} cells"
    return {"state": "cancelled", "headline": headline, "message": headline, "done": done + references_done,
            "total": cells + references, "results": {r: {"state": "cancelled", "headline": headline, "detail": ""}
                                                     for r in rows}}


def _sampler_name(sampler: str) -> str:
    from diffuscope.samplers import get_sampler

    return get_sampler(sampler).name


def run_exercise(entry: ModelEntry, req: ExerciseRequest, out: Path, emit: Emit, token: CancelToken) -> dict:
    """The sweep(s) of the exercise; one event per finished cell (its seeds' images, saved with their parameters,
    and the difference of its first seed to the reference run's image from the same noise). Progress counts the
    reference runs too: ``total`` = cells + references. A cancelled exercise ends in JobCancelled ("cancelled after
    N of M cells"), never in an answer. Rows are the samplers, or (``axis_y``) one sampler at each y value."""
    from diffuscope.io.pngmeta import save_png
    from diffuscope.sweep import sweep, write_reports
    from diffuscope.sweep.answer import sampler_answers
    from diffuscope.viz import to_pil
    from diffuscope.web.jobs import JobCancelled

    rows = exercise_rows(entry, req)
    first = rows[0][1]
    out.mkdir(parents=True, exist_ok=True)
    cells = sum(len(c.samplers) * len(c.steps) for _, c in rows)
    total = cells + len(rows)  # every row's reference run counts
    files = f"/api/files/{out.name}"  # the job's folder is named after its id (routes/files.py)
    note = entry.prompt_note(req.prompt)
    emit({"type": "plan", "nfe": sum(exercise_nfe(c) for _, c in rows), "n": first.n, "cells": cells,
          "total": total, "steps": list(first.steps), "axis_x": "steps", "axis_y": req.axis_y,
          "rows": [label for label, _ in rows] if req.axis_y != "sampler" else [_sampler_name(s) for s in
                                                                                 first.samplers],
          "highlight": [k for k in LESSON_STEPS if k in first.steps],
          "reference": f"{first.reference_sampler}, {first.reference_steps} steps", "prompt_note": note})
    finished: list = []
    references: list = []  # the rows whose reference run is done
    results: dict[str, dict] = {}
    plots: list[str] = []
    notes: list[str] = []
    floor = None
    for r, (label, config) in enumerate(rows):
        folder = "" if label is None else f"{req.axis_y}-{label}-"

        def on_cell(cell, label=label, config=config, folder=folder, r=r) -> None:
            token.check()
            if len(references) == r:  # this row's reference is done (it runs before the row's first cell)
                references.append(label)
                emit({"type": "reference", "row": label, "done": len(finished) + r + 1, "total": total})
            params = cell_params(entry, config, cell)
            seeds = []
            for i, image in enumerate(cell.images if cell.images is not None else []):
                name = f"{folder}{cell.sampler_id}-{cell.steps:04d}-{params['seed'] + i}.png"
                save_png(to_pil(image), out / name, {**params, "seed": params["seed"] + i})
                seeds.append({"seed": params["seed"] + i, "image": f"{files}/{name}"})
            event = {"type": "cell", "sampler": cell.sampler, "steps": cell.steps, "nfe": cell.nfe,
                     "image": data_url(cell.images[0]) if seeds else None,
                     "file": seeds[0]["image"].rsplit("/", 1)[1] if seeds else None,
                     "seed_images": seeds, "diff_image": None, "diff_scale": None,
                     "metrics": {k: (v if math.isfinite(v) else None) for k, v in cell.metrics.items()}}
            if label is not None:
                event["y"] = label
            if seeds and cell.reference_images is not None and len(cell.reference_images):
                diff = f"diff-{folder}{cell.sampler_id}-{cell.steps:04d}-{params['seed']}.png"
                diff_image(cell.images[0], cell.reference_images[0]).save(out / diff, format="PNG")
                event.update(diff_image=f"{files}/{diff}", diff_scale=DIFF_SCALE)
            finished.append((label, cell))
            event.update(done=len(finished) + r + 1, total=total)
            emit(event)

        result = sweep(checked_model(entry, token), config, device=model_device(entry), on_cell=on_cell)
        if token.cancelled or result.interrupted:  # a sweep stops cleanly on a cancel: its partial result is no answer
            names = [_sampler_name(s) for s in first.samplers] if label is None else [lbl for lbl, _ in rows]
            raise JobCancelled(cancelled_event(len(finished), cells, names, references=len(rows),
                                               references_done=len(references)))
        sub = "sweep" if label is None else f"sweep-{req.axis_y}-{label}"
        paths = write_reports(result, out / sub)
        if "quality.png" in paths:
            plots.append(f"{sub}/quality.png")
        for a in sampler_answers(result):
            key = a.sampler if label is None else label
            row = {"state": "done", **a.to_dict()}
            if label is not None:
                row["headline"] = f"{req.axis_y} {label}: {a.headline}"
            results[key] = row
        notes += result.notes
        floor = floor or (result.floor or {}).get("metrics")
    return {"type": "done", "state": "done", "answers": {k: f"{v['headline']} {v['detail']}".strip()
                                                          for k, v in results.items()},
            "results": results, "floor": floor, "prompt_note": note, "done": total, "total": total,
            "plot": plots[0] if plots else None, "plots": plots, "notes": notes}


def cell_params(entry: ModelEntry, config, cell) -> dict:
    """The parameters of a cell's first image, as ``generate.image_params`` writes them for ``sample``."""
    from diffuscope import __version__

    c, h, w = entry.shape
    return {"prompt": config.prompts[0] if config.prompts else "", "negative_prompt": "", "steps": cell.steps,
            "sampler": cell.sampler, "spacing": cell.grid.get("spacing"), "guidance": config.guidance,
            "guidance_interval": None, "seed": config.seed, "width": w, "height": h, "channels": c,
            "model_name": entry.name, "model_path": entry.ref, "nfe": cell.nfe, "grid": cell.grid,
            "version": __version__}

"""The page's calls into the library: the same functions the CLI calls (load_model, forward_process, generate,
sweep, measure_phases), run on the worker thread, reporting through ``emit`` and stopping at a CancelToken.

Every job writes what the CLI would write into its own folder ``out/<job id>/`` (PNG files carry the same
AUTOMATIC1111 ``parameters`` and JSON chunks as ``diffuscope sample``), so nothing is lost when the page closes.
"""

from __future__ import annotations

import base64
import functools
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from diffuscope.checks import limits, validate
from diffuscope.checks.errors import UsageError, quote
from diffuscope.core.events import CancelToken

Emit = Callable[[dict], None]
MAX_STEPS = limits.MAX_SERVE_STEPS  # per job (a discrete model allows at most its T); the page asks /api/info
MAX_EXERCISE_N = 64  # images per exercise cell
MAX_EXERCISE_CELLS = 32  # samplers x step counts
MAX_EXERCISE_IMAGE_NFE = 200_000  # n x total NFE: about 10 minutes of a small CPU model
EXERCISE_STEPS = (1, 2, 3, 5, 10, 25, 50, 100)  # the default columns: where the picture breaks, and the lesson's
LESSON_STEPS = (10, 25, 50, 100)  # the lesson's step counts, highlighted on the page
FORWARD_STRIDE = 10  # the forward slider's resolution in t (T/100 frames for T = 1000)
SIGMA_FRAMES = 100  # the forward slider's stops for a continuous model (log-spaced sigma)


def data_url(image: torch.Tensor, *, vp_sigma: float | None = None) -> str:
    """[C, H, W] in [-1, 1] -> a PNG data URL (with ``vp_sigma``: shown in VP scale x / sqrt(1 + sigma^2))."""
    from diffuscope.viz import to_pil

    if vp_sigma is not None:
        image = image / math.sqrt(1 + vp_sigma**2)
    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@dataclass
class ModelEntry:
    """A model the page offers: its name on the page, what was passed to --model, and the loaded model."""

    name: str
    ref: str
    model: Any  # diffuscope.core.model.DiffusionModel
    data: str  # the data set its real images come from
    data_note: str = ""  # where they come from when the model has no data set of its own
    user_data: bool = False  # ``data`` is the user's --real images

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the model's pixel images (decoded, for a latent model)."""
        return tuple(self.model.image_shape)

    @functools.cached_property
    def prompts(self) -> tuple[str, ...]:
        """The prompts the page suggests: class names, or a text model's trained names (read once)."""
        return self.model.trained_prompts()

    @functools.cached_property
    def prompt_index(self):
        """The trained prompts indexed for the nearest-prompt note (built once)."""
        from diffuscope.lesson.prompt_note import PromptIndex

        return PromptIndex(self.prompts)

    def prompt_note(self, prompt: str | None) -> str | None:
        """None for a prompt the model was trained on; else one sentence (lesson/prompt_note.py)."""
        from diffuscope.lesson.prompt_note import prompt_note

        return prompt_note(self.model.conditioner, self.prompt_index, prompt)

    @property
    def one_image_per_prompt(self) -> bool:
        """Whether the model was trained on one image per prompt (the emoji set, data/emoji.py)."""
        return self.model.data_name == "emoji"

    @property
    def cheap_preview(self) -> bool:
        """Whether the model's codec has a cheap linear latent-to-RGB preview (a diffusers pipeline's VAE)."""
        return callable(getattr(self.model.codec, "preview", None))

    @property
    def has_null(self) -> bool:
        """Whether the model has a null condition (guidance is possible)."""
        return self.model.conditioner.has_null

    @functools.cached_property
    def real_set(self):
        """The real images the forward process and inversion pick from (read once): the test split of the model's
        data set, or every image of user-supplied ones (``--real``: nothing is trained on them)."""
        from diffuscope.data import load_dataset

        c, h, _ = self.shape
        return load_dataset(self.data, split="all" if self.user_data else "test", image_size=h, channels=c)

    def describe(self) -> dict:
        from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER
        from diffuscope.lesson.demo import default_prompt
        from diffuscope.samplers import SAMPLERS

        schedule = self.model.denoiser.schedule
        return {"name": self.name, "class_names": list(self.prompts), "shape": list(self.shape),
                "discrete": bool(schedule.is_discrete), "schedule": schedule.name,
                "max_steps": min(MAX_STEPS, schedule.num_timesteps) if schedule.is_discrete else MAX_STEPS,
                "samplers": [{"name": s.name, "id": s.id} for s in SAMPLERS.values()],
                "default_sampler": DEFAULT_SAMPLER,
                "conditioning": self.model.conditioner.kind, "latent": self.model.codec is not None,
                "default_prompt": default_prompt(self.model) or "", "cheap_preview": self.cheap_preview,
                "default_guidance": DEFAULT_GUIDANCE if self.has_null else 1.0}

    def prompt(self, prompt: str | None) -> str | None:
        """The prompt as the model takes it (None: unconditional); the model's conditioner decides what is valid.
        An empty prompt for a class model means the null prompt (sampling unconditionally)."""
        if not prompt:
            if self.model.conditioner.has_text:
                raise UsageError(f"model {self.name} needs a prompt ({self.model.conditioner.describe()})")
            return None
        return self.model.conditioner.check(validate.prompt(prompt))  # UTF-8, no control characters


def load_entry(ref: str, device: str | torch.device = "cpu", dtype: str | None = None,
               real: str | None = None) -> ModelEntry:
    """A model for the page. Its real images (forward process, inversion) come from its own data set; a model
    without one (a diffusers pipeline) uses ``real`` (`serve --real DATA`), else a built-in set of its channels
    (emoji for colour, mnist for grey), and the page says so."""
    from diffuscope.models.load import load_model

    model = load_model(ref, device=device, dtype=dtype)
    name = model.run_config.get("model_name") or (Path(ref).name if model.run_config.get("pipeline") else str(ref))
    own = model.data_name
    data = own or real or ("emoji" if model.image_shape[0] == 3 else "mnist")
    note = "" if own else (f"this model has no data set of its own: real images from {data}"
                           + ("" if real else " (serve --real DATA to use yours)"))
    entry = ModelEntry(name, str(ref), model, data, note, user_data=real is not None and not own)
    if entry.user_data:
        _ = entry.real_set  # a bad --real fails here, in one line, before the server starts
    return entry


def _check_index(entry: ModelEntry, index: int) -> None:
    count = len(entry.real_set)
    if not 0 <= index < count:
        which = "images" if entry.user_data else "test set"
        raise UsageError(f"image index {index} is outside 0..{count - 1} ({entry.data} {which})")


class _Checked:
    """The denoiser, checking the cancel token before each network evaluation: a cancelled job stops within one
    NFE even inside a sweep or a phase measure, which have no per-step hook of their own."""

    def __init__(self, denoiser, token: CancelToken):
        self.denoiser, self.token = denoiser, token
        self.schedule = denoiser.schedule

    def __call__(self, x, sigma, cond=None):
        self.token.check()
        return self.denoiser(x, sigma, cond)


def _checked_model(entry: ModelEntry, token: CancelToken):
    return replace(entry.model, denoiser=_Checked(entry.model.denoiser, token))


# --- 1. forward process ----------------------------------------------------------------------------------------


def forward_frames(entry: ModelEntry, *, index: int, seed: int) -> dict:
    """The forward process of real test image ``index``, closed form and chain: every FORWARD_STRIDE-th t of a
    discrete VP model, or SIGMA_FRAMES sigmas log-spaced over a continuous model's range (plus sigma = 0)."""
    from diffuscope.core.schedules import VPSchedule
    from diffuscope.lesson.forward import forward_process, forward_process_sigma, sigma_frames

    schedule = entry.model.denoiser.schedule
    test = entry.real_set
    _check_index(entry, index)
    source = f"{entry.data} {'image' if entry.user_data else 'test image'} {index}"
    notes = [entry.data_note] if entry.data_note else []
    if entry.model.codec is not None:
        notes.append("in pixel space (the model itself works on the autoencoder's latents)")
    note = "; ".join(notes)
    if isinstance(schedule, VPSchedule):
        T = schedule.num_timesteps
        ts = list(range(0, T + 1, FORWARD_STRIDE))
        if ts[-1] != T:
            ts.append(T)
        fwd = forward_process(test.images[index], schedule, ts, seed=seed, source=source)
    else:  # continuous: no T, the slider moves along sigma
        sigmas = sigma_frames(schedule.sigma_min, schedule.sigma_max, SIGMA_FRAMES)
        fwd = forward_process_sigma(test.images[index], sigmas, seed=seed, source=source, schedule=schedule.name)
    return {"t": fwd.t, "sqrt_alpha_bar": fwd.sqrt_alpha_bar, "continuous": fwd.continuous,
            "sigma": [None if math.isinf(v) else v for v in fwd.sigma],
            "snr_db": [None if math.isinf(v) else v for v in fwd.snr_db],
            "closed": [data_url(x) for x in fwd.closed_form], "chain": [data_url(x) for x in fwd.chain],
            "schedule": fwd.schedule, "T": fwd.num_timesteps if not fwd.continuous else len(fwd.t) - 1,
            "source": fwd.source, "note": note,
            "label": test.class_names[int(test.labels[index])], "count": len(test)}


# --- 2. reverse process, live ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateRequest:
    prompt: str
    sampler: str
    steps: int
    seed: int
    guidance: float
    guidance_interval: tuple[float, float] | None
    preview_every: int  # 0 = no previews (only the step counter)
    preview: str = "decode"  # a latent model's previews: "decode" (the codec) or "cheap" (its linear latent-to-RGB map)


PREVIEWS = ("decode", "cheap")


def check_generate(entry: ModelEntry, req: GenerateRequest) -> None:
    """Refuse bad parameters before the job is queued (UsageError, one line)."""
    from diffuscope.core.guidance import check_interval
    from diffuscope.samplers import get_sampler

    get_sampler(req.sampler)
    limit = entry.describe()["max_steps"]
    if not 1 <= req.steps <= limit:
        raise UsageError(f"steps must be in 1..{limit}, got {req.steps}")
    if req.guidance < 0:
        raise UsageError(f"guidance must be >= 0, got {req.guidance}")
    if req.guidance != 1 and not entry.has_null:
        raise UsageError(f"model {entry.name} has no classes: guidance must be 1")
    if req.guidance_interval is not None:
        check_interval(req.guidance_interval)
    if req.preview_every < 0:
        raise UsageError(f"preview_every must be >= 0 (0 = none), got {req.preview_every}")
    if req.preview not in PREVIEWS:
        raise UsageError(f"unknown preview {quote(req.preview)}; valid: {', '.join(PREVIEWS)}")
    if req.preview == "cheap" and not entry.cheap_preview:
        raise UsageError(f"model {entry.name} has no cheap latent preview (a diffusers pipeline's VAE has one); "
                         "valid: decode")
    entry.prompt(req.prompt)


def run_generate(entry: ModelEntry, req: GenerateRequest, out: Path, emit: Emit, token: CancelToken) -> dict:
    """One image, as ``diffuscope sample --n 1`` makes it, with a step event (and previews) as each step is done."""
    from diffuscope.generation.generate import GenerationRequest, generate, image_params, write_images

    decode = entry.model.decode  # the identity for a pixel model
    if req.preview == "cheap":  # a linear map per latent pixel instead of the VAE decoder (vae.py)
        decode = entry.model.codec.preview

    from diffuscope.io.outputs import save_atomic
    from diffuscope.viz import to_pil

    frames: list[dict] = []  # every step's x_t and predicted clean image, on disk (not in RAM): the page scrubs them
    (out / "frames").mkdir(parents=True, exist_ok=True)
    files = f"/api/files/{out.name}/frames"  # the job's folder is named after its id (routes/files.py)

    def keep(name: str, image: torch.Tensor) -> str:
        pil = to_pil(image)
        save_atomic(out / "frames" / name, lambda f: pil.save(f, format="PNG"))
        return f"{files}/{name}"

    def on_step(info) -> None:
        token.check()
        k = info.i + 1
        event = {"type": "step", "k": k, "n": info.steps, "sigma": float(info.sigma), "band": band(k, info.steps)}
        preview = req.preview_every and (k % req.preview_every == 0 or k == info.steps)
        # a pixel model keeps every step; a latent one only the previews it decodes anyway (a VAE decode per step
        # would cost more than the step)
        every = entry.model.codec is None or preview
        kept = every and len(frames) < MAX_KEPT_FRAMES
        if preview or kept:
            with torch.no_grad():
                xt = decode(info.x[:1] / (1 + float(info.sigma) ** 2) ** 0.5)[0].float().cpu()
                x0 = decode(info.denoised[:1])[0].float().cpu()
            if preview:
                event["xt"], event["x0"] = data_url(xt), data_url(x0)
            if kept:
                frame = {"k": k, "sigma": float(info.sigma), "band": event["band"],
                         "xt": keep(f"xt-{k:04d}.png", xt), "x0": keep(f"x0-{k:04d}.png", x0)}
                frames.append(frame)
                event["frame"] = frame
        emit(event)

    prompt = entry.prompt(req.prompt)  # None: unconditional (a class model's null class, unguided)
    request = GenerationRequest(prompts=None if prompt is None else (prompt,), n=1, sampler=req.sampler,
                                steps=req.steps, guidance=req.guidance if entry.has_null else 1.0,
                                guidance_interval=req.guidance_interval, seed=req.seed, device=_device(entry))
    gen = generate(entry.model, request, observer=lambda event: on_step(event.data), cancel=token)
    params = [image_params(gen, 0, prompt=req.prompt, model_name=entry.name, model_path=entry.ref,
                           shape=entry.shape)]
    paths = write_images(gen, out, params)
    return {"type": "done", "image": data_url(gen.images[0]), "file": paths[0].name, "nfe": gen.nfe,
            "seed": gen.seed, "sampler": gen.sampler, "sigmas": [float(s) for s in gen.grid.sigmas],
            "frames": frames, "prompt_note": entry.prompt_note(req.prompt)}


MAX_KEPT_FRAMES = limits.MAX_SERVE_STEPS  # frames kept per reverse job (every step up to the page's step limit)
BANDS = ("early", "middle", "late")


def band(k: int, steps: int) -> str:
    """Which third of the reverse process step k (1-based) of ``steps`` lies in: early (composition), middle
    (structure) or late (detail), the lesson's phases (lesson/verdicts.py)."""
    return BANDS[min(2, 3 * (k - 1) // max(steps, 1))]


def _device(entry: ModelEntry) -> torch.device:
    return next(entry.model.denoiser.parameters()).device


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

        result = sweep(_checked_model(entry, token), config, device=_device(entry), on_cell=on_cell)
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
    emit({"type": "plan", "message": f"{steps} steps, {n} images"})
    config = PhasesConfig(prompt=prompt or None, steps=steps, n=n, seed=seed, points=min(8, steps),
                          consistency_steps=tuple(sorted({max(1, steps // 5), steps // 2, steps})))
    freq, commit, consist, notes = measure_phases(_checked_model(entry, token), config, device=_device(entry))
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
    _check_index(entry, index)
    return test.images[index][None], test.class_names[int(test.labels[index])]


def check_invert(entry: ModelEntry, req: InvertRequest) -> None:
    from diffuscope.samplers import get_sampler
    from diffuscope.samplers.steppers import stepper

    limit = entry.describe()["max_steps"]
    if not 2 <= req.steps <= limit:
        raise UsageError(f"steps must be in 2..{limit}, got {req.steps}")
    _check_index(entry, req.index)
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
    request = GenerationRequest(prompts=(prompt,), sampler=req.sampler, steps=req.steps, device=_device(entry))
    result = invert_image(_checked_model(entry, token), image, request, regen_prompt=req.regen_prompt or None)
    save_inversion(result, out, model=entry.ref, image=f"{entry.data} test image {req.index}")
    return {"type": "done", "answer": reachability(result), "report": result.report(), "label": label,
            "files": {"original": "original.png", "noise": "noise.png", "regenerated": "regenerated.png",
                      "noise_tensor": "noise.safetensors", "json": "invert.json"}}

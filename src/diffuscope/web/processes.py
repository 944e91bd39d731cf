"""The page's first two sections: the forward process of a real image (frames in t or sigma, closed form and
chain) and one image generated live, a step event (and previews) as each reverse step is done."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from diffuscope.checks import limits
from diffuscope.checks.errors import UsageError, quote
from diffuscope.core.events import CancelToken
from diffuscope.web.lesson import Emit, ModelEntry, check_index, data_url, model_device

FORWARD_STRIDE = 10  # the forward slider's resolution in t (T/100 frames for T = 1000)
SIGMA_FRAMES = 100  # the forward slider's stops for a continuous model (log-spaced sigma)


# --- 1. forward process ----------------------------------------------------------------------------------------


def forward_frames(entry: ModelEntry, *, index: int, seed: int) -> dict:
    """The forward process of real test image ``index``, closed form and chain: every FORWARD_STRIDE-th t of a
    discrete VP model, or SIGMA_FRAMES sigmas log-spaced over a continuous model's range (plus sigma = 0)."""
    from diffuscope.core.schedules import VPSchedule
    from diffuscope.lesson.forward import forward_process, forward_process_sigma, sigma_frames

    schedule = entry.model.denoiser.schedule
    test = entry.real_set
    check_index(entry, index)
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
    chosen = entry.resolve(sampler=req.sampler, steps=req.steps)  # a student's own grid at its K Euler steps
    request = GenerationRequest(prompts=None if prompt is None else (prompt,), n=1, sampler=req.sampler,
                                steps=req.steps, spacing=chosen.spacing, grid=chosen.grid(entry.model),
                                guidance=req.guidance if entry.has_null else 1.0,
                                guidance_interval=req.guidance_interval, seed=req.seed, device=model_device(entry))
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

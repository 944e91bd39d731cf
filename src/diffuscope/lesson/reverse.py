"""The reverse process as a picture: one image generated step by step, the noisy state x_t over the model's
predicted clean image at every step.

    rev = reverse_process(model, GenerationRequest(prompts=("7",), steps=50))  # a DiffusionModel (model.py)
    save_reverse(rev, "out/", show=8)                          # out/reverse.png, out/reverse.gif, out/reverse.json

``x_t`` is shown in VP scale, x / sqrt(1 + sigma^2), as the lessons' noisy images are. For a latent model both rows
are decoded to pixels (the VP-scaled latent state and the predicted clean latent).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from diffuscope.checks.errors import UsageError
from diffuscope.core.events import CancelToken, Observer
from diffuscope.core.schedules import to_vp
from diffuscope.generation.generate import GenerationRequest, generate
from diffuscope.lesson.phases import Trajectory
from diffuscope.viz.strips import labelled_strip, panel_scale, save_gif, save_png, trajectory_frames

GIF_PANEL = 112  # GIF panels are upscaled to at least this many pixels (28 -> 112)
# A longer run's GIF shows this many evenly spaced steps (first and last included) plus the final image: its frames
# are held in memory while the GIF is encoded, so 10,000 steps would otherwise take gigabytes (issue 29).
MAX_GIF_FRAMES = 250


@dataclass(frozen=True)
class ReverseResult:
    trajectory: Trajectory  # batch of 1
    label: int
    prompt: str
    sampler: str
    steps: int
    seed: int
    guidance: float
    nfe: int
    guidance_interval: tuple[float, float] | None = None  # guided only where lo < sigma <= hi
    x_is_vp: bool = False  # trajectory.x is already VP-scaled (and decoded), as for a latent model


def reverse_process(model, request: GenerationRequest, *, observer: Observer | None = None,
                    cancel: CancelToken | None = None) -> ReverseResult:
    """Generate one image of ``request`` (one prompt, or None for an unconditional model) with a ``DiffusionModel``
    exactly as ``generate`` does for this seed, and keep every step's state and prediction, decoded to pixels for a
    latent model (the identity for a pixel model)."""
    xs, ds = [], []

    def record(event) -> None:
        info = event.data
        xs.append(info.x.detach().float().cpu())
        ds.append(info.denoised.detach().float().cpu())
        if observer is not None:
            observer(event)

    prompts = request.prompts or (None,)
    if len(prompts) != 1 or request.n not in (None, 1):
        raise UsageError(f"the reverse process shows one image: give one prompt, got {len(prompts)}")
    prompt = model.conditioner.check(prompts[0])
    request = replace(request, prompts=None if prompt is None else (prompt,), n=1)
    gen = generate(model, request, observer=record, cancel=cancel)
    sigmas = gen.grid.sigmas.double().cpu()
    x, denoised = torch.stack(xs), torch.stack(ds)
    x_is_vp = model.codec is not None  # a latent model: decode the VP-scaled state and the predicted clean latent
    if x_is_vp:
        x = torch.stack([_decode(model, to_vp(x[i], sigmas[i : i + 1])) for i in range(len(x))])
        denoised = torch.stack([_decode(model, d) for d in denoised])
    traj = Trajectory(sigmas, x, denoised, gen.images, gen.sampler)
    label = model.conditioner.index(prompt) if model.conditioner.has_classes else -1
    return ReverseResult(traj, label, prompt or "", gen.sampler, gen.grid.steps, gen.seed, gen.guidance, gen.nfe,
                         gen.guidance_interval, x_is_vp)


def _decode(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.decode(x).float().cpu()


def show_indices(steps: int, show: int) -> list[int]:
    """``show`` step indices evenly spaced over 0..steps-1, first and last included."""
    if show < 2:
        raise UsageError(f"--show must be at least 2 (the first and the last step), got {show}")
    if show > steps:
        raise UsageError(f"--show {show} is larger than --steps {steps}")
    return [round(j * (steps - 1) / (show - 1)) for j in range(show)]


def gif_indices(steps: int) -> list[int]:
    """The steps the GIF shows: every one, or MAX_GIF_FRAMES evenly spaced (first and last included)."""
    return list(range(steps)) if steps <= MAX_GIF_FRAMES else show_indices(steps, MAX_GIF_FRAMES)


def save_reverse(result: ReverseResult, out: str | Path, *, show: int = 8, scale: int | None = None,
                 frame_ms: int = 120) -> list[Path]:
    """reverse.png: x_t (VP scale) over denoised at ``show`` steps, captioned with step i and sigma;
    reverse.gif: one frame per step (at most MAX_GIF_FRAMES, evenly spaced, for longer runs) plus the final image;
    reverse.json: the grid and parameters."""
    out = Path(out)
    traj = result.trajectory
    idx = show_indices(traj.steps, show)
    sig = traj.sigmas
    gif_steps = gif_indices(traj.steps)
    x_vp = traj.x[:, 0] if result.x_is_vp else torch.stack([to_vp(traj.x[i], sig[i : i + 1])[0]
                                                            for i in range(traj.steps)])
    den = traj.denoised[:, 0]
    prompt = f"prompt {result.prompt!r}" if result.prompt else "no prompt"
    title = (f"reverse process: {prompt}, {result.sampler}, {result.steps} steps, seed {result.seed}"
             + (f", guidance {result.guidance:g}" if result.guidance != 1 else "")
             + (" on ({:g}, {:g}]".format(*result.guidance_interval) if result.guidance_interval else ""))
    captions = [[f"step {i}", f"sigma {float(sig[i]):.3g}"] for i in idx]
    picture = labelled_strip([x_vp[idx], den[idx]], captions, title=title, scale=scale,
                             row_titles=["x_t, the noisy state (VP scale: x / sqrt(1 + sigma^2))",
                                         "denoised: the model's predicted clean image"])
    png = save_png(picture, out / "reverse.png")
    titles = [f"step {i}/{traj.steps}  sigma {float(sig[i]):.3g}" for i in gif_steps]
    frames = trajectory_frames(torch.cat([x_vp[gif_steps], traj.final]), torch.cat([den[gif_steps], traj.final]),
                               [*titles, f"final image  sigma 0  ({result.steps} steps)"],
                               scale=scale or panel_scale(max(traj.final.shape[-2:]), GIF_PANEL))
    gif = save_gif(frames, out / "reverse.gif", duration_ms=frame_ms)
    meta = out / "reverse.json"
    from diffuscope.io.outputs import write_text_atomic  # whole or nothing; a full disk: one line

    write_text_atomic(meta, json.dumps({
        "prompt": result.prompt, "label": result.label, "sampler": result.sampler, "steps": result.steps,
        "seed": result.seed, "guidance": result.guidance,
        "guidance_interval": None if result.guidance_interval is None else list(result.guidance_interval),
        "nfe": result.nfe, "shown_steps": idx,
        "sigmas": [float(s) for s in sig], "gif_frames": len(frames),
        **({"gif_steps": gif_steps} if len(gif_steps) < traj.steps else {}),
    }, indent=2))
    return [png, gif, meta]

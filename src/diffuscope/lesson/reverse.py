"""The reverse process as a picture: one image generated step by step, the noisy state x_t over the model's
predicted clean image at every step.

    rev = reverse_process(model, "7", steps=50, seed=0)        # a DiffusionModel (model.py) and a prompt
    save_reverse(rev, "out/", show=8)                          # out/reverse.png, out/reverse.gif, out/reverse.json

``x_t`` is shown in VP scale, x / sqrt(1 + sigma^2), as the lessons' noisy images are. For a latent model both rows
are decoded to pixels (the VP-scaled latent state and the predicted clean latent).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from diffuscope.checks.errors import UsageError
from diffuscope.core.defaults import DEFAULT_SAMPLER
from diffuscope.core.schedules import to_vp
from diffuscope.lesson.phases import Trajectory
from diffuscope.viz.strips import labelled_strip, panel_scale, save_gif, save_png, trajectory_frames

GIF_PANEL = 112  # GIF panels are upscaled to at least this many pixels (28 -> 112)


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


def reverse_process(model, prompt: str | None = None, *, steps: int = 50, sampler: str = DEFAULT_SAMPLER,
                    guidance: float = 1.0, seed: int = 0, spacing: str | None = None,
                    device: str | torch.device = "cpu", guidance_interval: tuple[float, float] | None = None,
                    on_event=None, cancel=None, grid=None) -> ReverseResult:
    """Generate one image with a ``DiffusionModel`` (exactly as ``generate_from_prompts`` does for this seed) and
    keep every step's state and prediction, decoded to pixels for a latent model. ``grid`` (a SigmaGrid, e.g. a
    tuned one) overrides ``steps`` and ``spacing``."""
    from diffuscope.generation.generate import generate_from_prompts

    xs, ds = [], []

    def record(info) -> None:
        xs.append(info.x.detach().float().cpu())
        ds.append(info.denoised.detach().float().cpu())

    prompt = model.conditioner.check(prompt)
    gen = generate_from_prompts(model, None if prompt is None else [prompt], n=1, sampler=sampler, steps=steps,
                                spacing=spacing, guidance=guidance, guidance_interval=guidance_interval, seed=seed,
                                device=device, callback=record, on_event=on_event, cancel=cancel, grid=grid)
    sigmas = gen.grid.sigmas.double().cpu()
    x, denoised = torch.stack(xs), torch.stack(ds)
    if model.is_latent:  # decode the VP-scaled state and the predicted clean latent, step by step
        x = torch.stack([_decode(model, to_vp(x[i], sigmas[i : i + 1])) for i in range(len(x))])
        denoised = torch.stack([_decode(model, d) for d in denoised])
        x_is_vp = True
    else:
        x_is_vp = False
    traj = Trajectory(sigmas, x, denoised, gen.images, gen.sampler)
    label = model.conditioner.index(prompt) if model.conditioner.kind == "class" else -1
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


def save_reverse(result: ReverseResult, out: str | Path, *, show: int = 8, scale: int | None = None,
                 frame_ms: int = 120) -> list[Path]:
    """reverse.png: x_t (VP scale) over denoised at ``show`` steps, captioned with step i and sigma;
    reverse.gif: one frame per step plus the final image; reverse.json: the grid and parameters."""
    out = Path(out)
    traj = result.trajectory
    idx = show_indices(traj.steps, show)
    sig = traj.sigmas
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
    titles = [f"step {i}/{traj.steps}  sigma {float(sig[i]):.3g}" for i in range(traj.steps)]
    frames = trajectory_frames(torch.cat([x_vp, traj.final]), torch.cat([den, traj.final]),
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
    }, indent=2))
    return [png, gif, meta]

"""Generation: pure noise -> images for a list of prompts (class labels), with any sampler, grid and guidance.

This is the one place that turns (sampler name, steps, seed, guidance) into images; the CLI, the training preview,
the sweep and the pictures all call it. Image i uses its own generator seeded ``seed + i`` (ARCHITECTURE.md), so
an image does not change with the batch size it was generated in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from diffuscope.defaults import DEFAULT_SAMPLER
from diffuscope.errors import UsageError
from diffuscope.guidance import CFGDenoiser, check_interval
from diffuscope.limits import check_request
from diffuscope.samplers import CountingDenoiser, get_sampler, initial_noise, make_generators, resolve_seed
from diffuscope.schedules import Schedule, SigmaGrid, make_grid
from diffuscope.validate import check_finite


@dataclass(frozen=True)
class Generation:
    images: Tensor  # [N, C, H, W], float32 in about [-1, 1] (not clipped)
    grid: SigmaGrid  # the sigmas (and timesteps) actually used
    sampler: str  # display name
    seed: int  # the seed actually used (a random one when -1 was asked)
    nfe: int  # measured network evaluations per image batch
    guidance: float
    guidance_interval: tuple[float, float] | None = None  # guided only where lo < sigma <= hi (None: everywhere)


def generate(
    denoiser: Callable,
    schedule: Schedule,
    labels: Tensor,
    shape: tuple[int, int, int],
    *,
    sampler: str = DEFAULT_SAMPLER,
    steps: int = 25,
    spacing: str | None = None,
    guidance: float = 1.0,
    guidance_interval: tuple[float, float] | None = None,
    seed: int = 0,
    null_label: int | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    callback: Callable | None = None,
    sampler_options: dict | None = None,
    grid: SigmaGrid | None = None,
) -> Generation:
    """Generate ``len(labels)`` images of ``shape`` (C, H, W), image i prompted by ``labels[i]``.

    ``guidance`` > 1 needs ``null_label`` (the class index of the empty prompt); ``guidance_interval`` = (sigma_lo,
    sigma_hi) applies it only where sigma_lo < sigma <= sigma_hi (see guidance.py). ``grid`` overrides ``steps`` and
    ``spacing`` with an explicit sigma grid. ``callback`` receives each batch's StepInfo (see samplers).
    """
    spec = get_sampler(sampler)
    check_request(guidance, len(labels), shape, steps if grid is None else grid.steps, batch_size)
    if guidance < 0:
        raise UsageError(f"guidance must be >= 0, got {guidance}")
    if batch_size < 1:
        raise UsageError(f"batch size must be a positive integer, got {batch_size}")
    guidance_interval = check_interval(guidance_interval) if guidance != 1.0 else None  # no guidance: no interval
    seed = resolve_seed(seed)
    grid = grid or make_grid(schedule, steps, spacing)
    labels = torch.as_tensor(labels, dtype=torch.long)
    if guidance != 1.0:
        if null_label is None:
            raise UsageError("this model has no empty prompt (null class): guidance must be 1")
        model = CFGDenoiser(denoiser, guidance, null_label, guidance_interval)
    else:
        model = denoiser
    counter = CountingDenoiser(model)
    generators = make_generators(seed, len(labels))
    sigmas = grid.sigmas.to(device)
    out = []
    nfe = 0
    with torch.inference_mode():
        for start in range(0, len(labels), batch_size):
            end = min(start + batch_size, len(labels))
            x = initial_noise((end - start, *shape), generators[start:end], float(grid.sigmas[0]), dtype, device)
            counter.reset()
            x = spec.fn(counter, x, sigmas, cond=labels[start:end].to(device), generator=generators[start:end],
                        callback=callback, **(sampler_options or {}))
            nfe = counter.nfe
            check_finite(x, f"the denoiser returned NaN/inf (images {start}..{end - 1}): nothing was written")
            out.append(x.float().cpu())
    return Generation(torch.cat(out), grid, spec.name, seed, nfe, guidance, guidance_interval)


def image_params(gen: Generation, index: int, *, prompt: str, model_name: str, model_path: str,
                 shape: tuple[int, int, int]) -> dict:
    """The full parameters of image ``index`` of a generation: what reproduces it with n=1."""
    from diffuscope import __version__

    return {
        "prompt": prompt,
        "negative_prompt": "",
        "steps": gen.grid.steps,
        "sampler": gen.sampler,
        "spacing": gen.grid.spacing,
        "guidance": gen.guidance,
        "guidance_interval": None if gen.guidance_interval is None else list(gen.guidance_interval),
        "seed": gen.seed + index,
        "width": shape[2],
        "height": shape[1],
        "channels": shape[0],
        "model_name": model_name,
        "model_path": model_path,
        "nfe": gen.nfe,
        "grid": gen.grid.describe(),
        "version": __version__,
    }


def write_images(gen: Generation, out_dir: str | Path, params: list[dict], *, grid_scale: int = 1) -> list[Path]:
    """One PNG per image at its native size (with its parameters) and a grid (upscaled by ``grid_scale``),
    numbered after what ``out_dir`` already holds: nothing there is overwritten."""
    from diffuscope.pngmeta import save_png
    from diffuscope.viz import image_grid, to_pil

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = len(list(out_dir.glob("[0-9][0-9][0-9][0-9][0-9]-*.png")))
    paths = []
    for i, (image, p) in enumerate(zip(gen.images, params)):
        paths.append(save_png(to_pil(image), out_dir / f"{start + i:05d}-{p['seed']}.png", p))
    grid_path = out_dir / "grid.png"
    k = 1
    while grid_path.exists():
        grid_path = out_dir / f"grid-{k:05d}.png"
        k += 1
    image_grid(gen.images, scale=grid_scale).save(grid_path)
    return [*paths, grid_path]

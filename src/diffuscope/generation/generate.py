"""Generation: pure noise -> images for prompts (or unconditionally), with any sampler, grid and guidance.

    gen = generate(model, GenerationRequest(prompts=("7",), n=8, sampler="DPM++ 2M", steps=20, guidance=2.0))

This is the one place that turns a request (prompts, sampler, steps, seed, guidance) into images; the CLI, the
training preview, the sweep, the page and the pictures all call it. Image i uses its own generator seeded
``seed + i`` (docs/architecture.md) and, with ``batch_invariant`` (the default), its own network calls
(core/batch_invariance.py), so an image does not change with the batch size it was generated in. Samples
are decoded to pixels by the model (the identity for a pixel model): what callers see is always pixel images.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffuscope.checks.errors import UsageError
from diffuscope.checks.limits import check_request
from diffuscope.checks.validate import check_finite
from diffuscope.core.batch_invariance import decode_per_image, per_image
from diffuscope.core.defaults import DEFAULT_SAMPLER, DEFAULT_STEPS
from diffuscope.core.events import CancelToken, Observer, Progress, report
from diffuscope.core.guidance import check_interval, check_scale
from diffuscope.core.model import DiffusionModel
from diffuscope.core.schedules import SigmaGrid, make_grid
from diffuscope.samplers import CountingDenoiser, get_sampler, initial_noise, make_generators, resolve_seed


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate with a model: the flags of `diffuscope sample`, the page's form or one sweep cell."""

    prompts: tuple[str | None, ...] | None = None  # prompt i % len for image i; None: unconditional (null condition)
    n: int | None = None  # number of images (None: one per prompt)
    sampler: str = DEFAULT_SAMPLER
    steps: int = DEFAULT_STEPS
    spacing: str | None = None  # the grid's spacing (None: the model's default; schedules.make_grid)
    grid: SigmaGrid | None = None  # an explicit sigma grid: overrides steps and spacing
    guidance: float = 1.0  # classifier-free guidance scale (1 = off; Ho & Salimans 2022)
    guidance_interval: tuple[float, float] | None = None  # guided only where lo < sigma <= hi (None: everywhere)
    seed: int = 0  # image i draws from its own generator seeded seed + i; -1 = a random seed
    batch_size: int = 64
    device: str | torch.device = "cpu"
    dtype: torch.dtype = torch.float32  # the sampler's arithmetic
    sampler_options: Mapping[str, Any] | None = None  # flat: eta, s_churn, order, ... (SamplerSpec.keywords)
    # network calls (denoiser, decoder) one image at a time, so an image is bit-identical in any batch (its seed and
    # settings only; core/batch_invariance.py); False: whole batches, faster (bench/bench_batch_invariance.py)
    batch_invariant: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.prompts, str):
            raise TypeError(f"prompts is a sequence of prompts, got the string {self.prompts!r}: give a tuple")
        if self.prompts is not None:
            object.__setattr__(self, "prompts", tuple(self.prompts))


@dataclass(frozen=True)
class Generation:
    images: Tensor  # [N, C, H, W] pixel images, float32 in about [-1, 1] (not clipped); decoded for latent models
    grid: SigmaGrid  # the sigmas (and timesteps) actually used
    sampler: str  # display name
    seed: int  # the seed actually used (a random one when -1 was asked)
    nfe: int  # measured network evaluations per image batch
    guidance: float
    guidance_interval: tuple[float, float] | None = None  # guided only where lo < sigma <= hi (None: everywhere)
    samples: Tensor | None = None  # what the sampler produced (latents for a latent model, else the images)


def _step_observer(observer: Observer | None, cancel: CancelToken | None, start: int, n: int) -> Callable | None:
    """The sampler callback: a 'generate' Progress event per step (data: the StepInfo of the batch holding images
    start..start+len), checking the cancel token at every step."""
    if observer is None and cancel is None:
        return None

    def step(info) -> None:
        report(observer, cancel, Progress("generate", info.i + 1, info.steps, f"images {start + 1}-{n}", info))

    return step


def generate(model: DiffusionModel, request: GenerationRequest, *, observer: Observer | None = None,
             cancel: CancelToken | None = None) -> Generation:
    """Generate ``request`` with a ``DiffusionModel`` (core/model.py; docs/architecture.md): prompts -> conditions
    through its conditioner (``conditions``), its denoiser guided by ``model.guided``, pure noise -> samples by the
    sampler, samples -> pixel images by ``model.decode``. Unconditional sampling (``prompts=None``) of a
    conditional model samples its null condition, unguided. ``observer`` receives a Progress event per sampler
    step (data: its StepInfo) and ``cancel`` stops the work (events.py)."""
    spec = get_sampler(request.sampler)
    options = spec.keywords(request.sampler_options)  # flat names -> the sampler's option object (registry.py)
    guidance = check_scale(request.guidance)
    if request.prompts is None and model.conditioner.has_null:
        guidance = 1.0  # the null condition guided towards itself is itself: one call per step
    if request.batch_size < 1:
        raise UsageError(f"batch size must be a positive integer, got {request.batch_size}")
    interval = check_interval(request.guidance_interval) if guidance != 1.0 else None  # no guidance: no interval
    seed = resolve_seed(request.seed)
    grid = request.grid or make_grid(model.schedule, request.steps, request.spacing)
    cond = model.conditioner.conditions(request.prompts, request.n)
    n = request.n if cond is None else len(cond)
    check_request(guidance, n, model.sample_shape, grid.steps, request.batch_size)
    denoiser = model.guided(guidance, interval)
    counter = CountingDenoiser(per_image(denoiser) if request.batch_invariant else denoiser)
    decode = partial(decode_per_image, model) if request.batch_invariant else model.decode
    generators = make_generators(seed, n)
    device, batch_size = request.device, request.batch_size
    sigmas = grid.sigmas.to(device)
    samples, images = [], []
    nfe = 0
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            end = min(start + batch_size, n)
            x = initial_noise((end - start, *model.sample_shape), generators[start:end], float(grid.sigmas[0]),
                              request.dtype, device)
            counter.reset()
            batch_cond = None if cond is None else cond[start:end].to(device)
            x = spec.fn(counter, x, sigmas, cond=batch_cond, generator=generators[start:end],
                        callback=_step_observer(observer, cancel, start, n), **options)
            nfe = counter.nfe
            check_finite(x, f"the denoiser returned NaN/inf (images {start}..{end - 1}): nothing was written")
            samples.append(x.float().cpu())
            images.append(decode(x).float().cpu())
    return Generation(torch.cat(images), grid, spec.name, seed, nfe, guidance, interval, torch.cat(samples))


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


def write_images(gen: Generation, out_dir: str | Path, params: list[dict], *, grid_scale: int = 1,
                 start: int | None = None) -> list[Path]:
    """One PNG per image at its native size (with its parameters) and a grid (upscaled by ``grid_scale``),
    numbered from ``start`` (default: 1 + the largest number ``out_dir`` already holds, outputs.next_image_number,
    which a caller reads before sampling): nothing there is overwritten."""
    from diffuscope.io.outputs import next_image_number, save_atomic
    from diffuscope.io.pngmeta import save_png
    from diffuscope.viz import image_grid, to_pil

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = next_image_number(out_dir) if start is None else start
    paths = []
    for i, (image, p) in enumerate(zip(gen.images, params)):
        paths.append(save_png(to_pil(image), out_dir / f"{start + i:05d}-{p['seed']}.png", p))
    grid_path = out_dir / "grid.png"
    k = 1
    while grid_path.exists():
        grid_path = out_dir / f"grid-{k:05d}.png"
        k += 1
    grid = image_grid(gen.images, scale=grid_scale)
    save_atomic(grid_path, lambda f: grid.save(f, format="PNG"), overwrite=False)  # whole or nothing, never replaced
    return [*paths, grid_path]

"""Generation: pure noise -> images for a batch of conditions (or prompts), with any sampler, grid and guidance.

This is the one place that turns (sampler name, steps, seed, guidance) into images; the CLI, the training preview,
the sweep, the page and the pictures all call it. Image i uses its own generator seeded ``seed + i``
(ARCHITECTURE.md), so an image does not change with the batch size it was generated in. A latent model's samples
are decoded to pixels here (``decode``): what callers see is always pixel images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from diffuscope.checks.errors import UsageError
from diffuscope.checks.limits import check_request
from diffuscope.checks.validate import check_finite
from diffuscope.core.conditioning import Cond, as_cond
from diffuscope.core.defaults import DEFAULT_SAMPLER
from diffuscope.core.events import CancelToken, Observer, Progress, report
from diffuscope.core.guidance import CFGDenoiser, check_interval, check_scale
from diffuscope.core.schedules import Schedule, SigmaGrid, make_grid
from diffuscope.samplers import CountingDenoiser, get_sampler, initial_noise, make_generators, resolve_seed


@dataclass(frozen=True)
class Generation:
    images: Tensor  # [N, C, H, W] pixel images, float32 in about [-1, 1] (not clipped); decoded for latent models
    grid: SigmaGrid  # the sigmas (and timesteps) actually used
    sampler: str  # display name
    seed: int  # the seed actually used (a random one when -1 was asked)
    nfe: int  # measured network evaluations per image batch
    guidance: float
    guidance_interval: tuple[float, float] | None = None  # guided only where lo < sigma <= hi (None: everywhere)
    samples: Tensor | None = None  # what the sampler produced (latents for a latent model; None = images)


def _step_observer(on_event: Observer | None, cancel: CancelToken | None, callback: Callable | None,
                   start: int, n: int) -> Callable | None:
    """The sampler callback: the caller's callback, then a 'generate' Progress event (data: the StepInfo of the
    batch holding images start..start+len), checking the cancel token at every step."""
    if on_event is None and cancel is None:
        return callback

    def step(info) -> None:
        if callback is not None:
            callback(info)
        report(on_event, cancel, Progress("generate", info.i + 1, info.steps, f"images {start + 1}-{n}", info))

    return step


def generate(
    denoiser: Callable,
    schedule: Schedule,
    labels: Cond | Tensor | Sequence[int] | None,
    shape: tuple[int, int, int],
    *,
    sampler: str = DEFAULT_SAMPLER,
    steps: int = 25,
    spacing: str | None = None,
    guidance: float = 1.0,
    guidance_interval: tuple[float, float] | None = None,
    seed: int = 0,
    null_label: Cond | int | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    callback: Callable | None = None,
    sampler_options: dict | None = None,
    grid: SigmaGrid | None = None,
    n: int | None = None,
    decode: Callable[[Tensor], Tensor] | None = None,
    on_event: Observer | None = None,
    cancel: CancelToken | None = None,
) -> Generation:
    """Generate one image of ``shape`` (C, H, W) per row of ``labels``: a ``Cond`` (class labels or text), int
    class labels (wrapped as ``ClassCond``), or None for an unconditional model (then give ``n``).

    ``guidance`` != 1 needs ``null_label``, the null condition (a Cond, or the null class index);
    ``guidance_interval`` = (sigma_lo, sigma_hi) applies it only where sigma_lo < sigma <= sigma_hi (see
    guidance.py). ``grid`` overrides ``steps`` and ``spacing`` with an explicit sigma grid. ``callback`` receives
    each batch's StepInfo (see samplers); ``on_event`` receives Progress events and ``cancel`` stops the work
    (events.py). ``decode`` maps the samples to pixel images (a latent model's decoder).
    """
    spec = get_sampler(sampler)
    guidance = check_scale(guidance)
    if batch_size < 1:
        raise UsageError(f"batch size must be a positive integer, got {batch_size}")
    guidance_interval = check_interval(guidance_interval) if guidance != 1.0 else None  # no guidance: no interval
    seed = resolve_seed(seed)
    grid = grid or make_grid(schedule, steps, spacing)
    cond = as_cond(labels)
    if cond is None:
        if n is None or n < 1:
            raise UsageError("an unconditional generation needs the number of images n >= 1")
        if guidance != 1.0:
            raise UsageError("this model is unconditional: guidance must be 1 (there is no prompt to guide towards)")
    else:
        if n is not None and n != len(cond):
            cond = cond.expand(n)
        n = len(cond)
    check_request(guidance, n, shape, grid.steps, batch_size)
    if guidance != 1.0:
        if null_label is None:
            raise UsageError("this model has no empty prompt (null condition): guidance must be 1")
        model = CFGDenoiser(denoiser, guidance, null_label, guidance_interval)
    else:
        model = denoiser
    counter = CountingDenoiser(model)
    generators = make_generators(seed, n)
    sigmas = grid.sigmas.to(device)
    samples, images = [], []
    nfe = 0
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            end = min(start + batch_size, n)
            x = initial_noise((end - start, *shape), generators[start:end], float(grid.sigmas[0]), dtype, device)
            counter.reset()
            batch_cond = None if cond is None else cond[start:end].to(device)
            x = spec.fn(counter, x, sigmas, cond=batch_cond, generator=generators[start:end],
                        callback=_step_observer(on_event, cancel, callback, start, n), **(sampler_options or {}))
            nfe = counter.nfe
            check_finite(x, f"the denoiser returned NaN/inf (images {start}..{end - 1}): nothing was written")
            samples.append(x.float().cpu())
            images.append(samples[-1] if decode is None else decode(x).float().cpu())
    images = torch.cat(images)
    return Generation(images, grid, spec.name, seed, nfe, guidance, guidance_interval,
                      None if decode is None else torch.cat(samples))


def generate_from_prompts(model, prompts: Sequence[str | None] | None, *, n: int | None = None,
                          guidance: float = 1.0, device: str | torch.device = "cpu", **options) -> Generation:
    """Generate with a ``DiffusionModel`` (model.py): prompt i -> condition through the model's conditioner (the
    one place prompts are read), its null condition for guidance, its sample shape, decoded to pixels. An
    unconditional model takes ``prompts=None`` and ``n``; a single prompt with ``n`` repeats it."""
    conditioner = model.conditioner
    if prompts is None or conditioner.kind == "none":
        conditioner.encode(list(prompts or []))  # a prompt given to an unconditional model is refused
        cond, null = None, None
    else:
        prompts = list(prompts)
        if n is not None and len(prompts) == 1:
            prompts = prompts * n
        cond = conditioner.encode(prompts)
        null = conditioner.null(1) if guidance != 1 else None
    return generate(model.denoiser, model.schedule, cond, model.sample_shape, guidance=guidance, null_label=null,
                    n=n, device=device, decode=model.decode if model.is_latent else None, **options)


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

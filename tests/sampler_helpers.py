"""What the sampler tests (test_samplers.py, test_sampler_options.py) share: the exact Gaussian, a Karras grid,
seeded initial noise and a run of a sampler by id with flat options."""

from __future__ import annotations

import torch

from diffuscope.core.reference import GaussianDenoiser
from diffuscope.core.schedules import EDMSchedule, make_grid
from diffuscope.samplers import SAMPLERS, initial_noise, make_generators

GAUSS = GaussianDenoiser(0.3, 0.5)
SHAPE = (4, 1, 4, 4)


def grid(steps: int) -> torch.Tensor:
    return make_grid(EDMSchedule(0.002, 80.0), steps).sigmas


def start(sigmas: torch.Tensor, seed: int = 0, shape=SHAPE, dtype=torch.float32) -> torch.Tensor:
    return initial_noise(shape, make_generators(seed, shape[0]), sigmas[0], dtype)


def run(sampler_id: str, x, sigmas, seed: int = 1, callback=None, **options):
    """Run a sampler with flat options (s_churn=..., order=...), mapped as GenerationRequest.sampler_options are."""
    spec = SAMPLERS[sampler_id]
    return spec.fn(GAUSS, x, sigmas, generator=make_generators(seed, len(x)), callback=callback,
                   **spec.keywords(options))

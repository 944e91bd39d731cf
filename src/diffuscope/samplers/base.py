"""What every sampler shares: the per-step callback record, reproducible noise, seeds and an NFE counter.

Reproducible noise (docs/architecture.md): image i of a batch draws from its own generator seeded ``seed + i``, so an
image does not change when the batch size changes. Noise is drawn in float32 and cast, so float32 and float64
runs start from the same numbers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from diffuscope.checks.errors import UsageError, quote
from diffuscope.core.contract import DenoiseFn
from diffuscope.core.schedules import check_sigmas

Generators = torch.Generator | Sequence[torch.Generator] | None
Callback = Callable[["StepInfo"], None] | None
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class StepInfo:
    """One sampler step, handed to ``callback``: the state ``x`` at ``sigma`` (before the step) and the model's
    predicted clean image ``denoised`` there. ``i`` counts from 0 to ``steps - 1``."""

    i: int
    sigma: float
    sigma_next: float
    x: Tensor
    denoised: Tensor
    steps: int


# --- seeds and noise ---------------------------------------------------------------------------------------------


def resolve_seed(seed: int | None) -> int:
    """-1 (or None) picks a random seed, returned so it can be reported; otherwise the seed itself (0..2^32-1)."""
    if seed is None or seed == -1:
        return random.randrange(MAX_SEED)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UsageError(f"seed must be -1 (random) or an integer in 0..{MAX_SEED}, got {quote(seed)}")
    return seed


def make_generators(seed: int, n: int, device: str | torch.device = "cpu") -> list[torch.Generator]:
    """n generators seeded seed, seed + 1, ..., seed + n - 1: one per image of a batch. Resolve -1 (random)
    with ``resolve_seed`` first, so the seed can be reported."""
    if seed == -1 or resolve_seed(seed) != seed:
        raise UsageError(f"make_generators needs a resolved seed in 0..{MAX_SEED} (call resolve_seed), got "
                         f"{quote(seed)}")
    return [torch.Generator(device=device).manual_seed(seed + i) for i in range(n)]


def _randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32, device=gen_device)


def randn(shape: Sequence[int], generator: Generators = None, device: str | torch.device = "cpu") -> Tensor:
    """Standard normal noise of ``shape`` (float32): per image when ``generator`` is a sequence (one per row)."""
    device = torch.device(device)
    if generator is None or isinstance(generator, torch.Generator):
        return _randn(shape, generator, device).to(device)
    if len(generator) != shape[0]:
        raise UsageError(f"got {len(generator)} generators for a batch of {shape[0]}")
    return torch.stack([_randn(shape[1:], g, device) for g in generator]).to(device)


def noise_like(x: Tensor, generator: Generators = None) -> Tensor:
    """Standard normal noise shaped like ``x`` in x's dtype and device (drawn in float32, per image for a sequence)."""
    return randn(x.shape, generator, x.device).to(x.dtype)


def initial_noise(
    shape: Sequence[int],
    generators: Generators,
    sigma_max: float,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> Tensor:
    """The sampler's starting state in sigma space: noise * sigma_max (pass ``sigmas[0]``)."""
    return (randn(shape, generators, device).to(dtype) * float(sigma_max)).to(dtype)


# --- the NFE counter -------------------------------------------------------------------------------------------


class CountingDenoiser:
    """Wraps a denoiser and counts network function evaluations: one call (of any batch size) is one NFE.
    ``batch_sizes`` records the batch of each call."""

    def __init__(self, denoiser: DenoiseFn):
        self.denoiser = denoiser
        self.batch_sizes: list[int] = []

    @property
    def nfe(self) -> int:
        return len(self.batch_sizes)

    def reset(self) -> None:
        self.batch_sizes = []

    def __call__(self, x: Tensor, sigma: Tensor, cond=None) -> Tensor:
        self.batch_sizes.append(len(x))
        return self.denoiser(x, sigma, cond)


# --- helpers for the sampler functions ---------------------------------------------------------------------------


def prepare(x: Tensor, sigmas: Tensor) -> list[float]:
    """Validate the grid and return it as Python floats (float64 arithmetic for the step coefficients)."""
    if not isinstance(sigmas, Tensor):
        raise TypeError(f"sigmas must be a tensor, got {type(sigmas).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    return check_sigmas(sigmas)


def sigma_batch(sigma: float, x: Tensor) -> Tensor:
    """The [B] noise-level tensor handed to the denoiser: ``sigma`` (float64) for every image of x."""
    return torch.full((len(x),), sigma, dtype=torch.float64, device=x.device)


def denoise(denoiser: DenoiseFn, x: Tensor, sigma: float, cond) -> Tensor:
    """One network evaluation D(x, sigma, cond) at the [B] ``sigma_batch``, returned in x's dtype."""
    return denoiser(x, sigma_batch(sigma, x), cond).to(x.dtype)


def to_d(x: Tensor, sigma: float, denoised: Tensor) -> Tensor:
    """The PF-ODE derivative dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al. 2022, Eq. 3 with s = 1)."""
    return (x - denoised) / sigma


def euler_step(x: Tensor, denoised: Tensor, sigma: float, sigma_next: float) -> Tensor:
    """One Euler step of the PF-ODE from sigma to sigma_next, x + (sigma_next - sigma) (x - D) / sigma, written as
    D + (sigma_next / sigma) (x - D): one fused lerp, exact for sigma_next = 0 (lands on D)."""
    return torch.lerp(denoised, x, sigma_next / sigma)


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """(sigma_down, sigma_up) for an ancestral step sigma -> sigma_next: deterministic to sigma_down, then noise
    of std sigma_up, with sigma_down^2 + sigma_up^2 = sigma_next^2. eta = 1 is the DDPM posterior (Ho et al. 2020,
    Eq. 7); general eta is DDIM's sigma_t(eta) (Song et al. 2021, Eq. 16) written in sigma space (as k-diffusion's
    get_ancestral_step)."""
    if eta < 0:
        raise UsageError(f"eta must be >= 0, got {eta}")
    if not eta or sigma_next == 0:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


@dataclass(frozen=True)
class Churn:
    """Stochastic churn of Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative
    Models"), Algorithm 2: S_churn, S_tmin, S_tmax, S_noise. Where S_tmin <= sigma <= S_tmax, each step first
    raises the noise level to sigma_hat = sigma (1 + gamma), gamma = min(S_churn / N, sqrt(2) - 1), adding fresh
    noise scaled by S_noise. The default (S_churn = 0) adds none: the plain probability-flow ODE."""

    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = float("inf")
    s_noise: float = 1.0


NO_CHURN = Churn()


@dataclass(frozen=True)
class SDENoise:
    """The SDE samplers' noise: ``eta`` scales the injected noise (0 = the deterministic ODE solver, 1 = the full
    SDE step), ``s_noise`` scales the drawn noise itself (as k-diffusion's ``eta`` and ``s_noise``)."""

    eta: float = 1.0
    s_noise: float = 1.0

    def __post_init__(self) -> None:
        if self.eta < 0:
            raise UsageError(f"eta must be >= 0, got {self.eta}")


FULL_SDE_NOISE = SDENoise()


def add_churn(x: Tensor, sigma: float, steps: int, generator: Generators, c: Churn) -> tuple[Tensor, float]:
    """Karras et al. 2022, Algorithm 2 lines 4-6: raise the noise level to sigma_hat = sigma (1 + gamma)."""
    gamma = min(c.s_churn / steps, 2**0.5 - 1) if c.s_churn > 0 and c.s_tmin <= sigma <= c.s_tmax else 0.0
    if gamma <= 0:
        return x, sigma
    sigma_hat = sigma * (1 + gamma)
    return x + noise_like(x, generator) * (c.s_noise * (sigma_hat**2 - sigma**2) ** 0.5), sigma_hat

"""DDIM (Song et al. 2021) and DDPM ancestral sampling (Ho et al. 2020), written in sigma space.

With x = x_vp / sqrt(alpha_bar) and sigma^2 = (1 - alpha_bar) / alpha_bar, the DDIM update (Song et al. 2021,
Eq. 12) becomes

    x_next = x0_hat + sigma_down * eps_hat + sigma_up * z,      eps_hat = (x - x0_hat) / sigma,

with sigma_up = eta * sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2) (their sigma_t(eta), Eq. 16, divided
by sqrt(alpha_bar_next)) and sigma_down = sqrt(sigma_next^2 - sigma_up^2). eta = 0 is deterministic DDIM, which
is exactly Euler in sigma space; eta = 1 is the DDPM posterior q(x_{t-1} | x_t, x0_hat) (Ho et al. 2020, Eqs. 6-7)
on the full T-step grid or a respaced one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffuscope.core.contract import DenoiseFn
from diffuscope.samplers.base import (
    Callback,
    Generators,
    StepInfo,
    ancestral_step,
    denoise,
    euler_step,
    noise_like,
    prepare,
)


@torch.no_grad()
def sample_ddim(
    denoiser: DenoiseFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond=None,
    generator: Generators = None,
    callback: Callback = None,
    eta: float = 0.0,
    s_noise: float = 1.0,
) -> Tensor:
    """DDIM with stochasticity ``eta`` (Song et al. 2021, Eqs. 12 and 16); one NFE per step."""
    sig = prepare(x, sigmas)
    steps = len(sig) - 1
    for i in range(steps):
        denoised = denoise(denoiser, x, sig[i], cond)
        if callback is not None:
            callback(StepInfo(i, sig[i], sig[i + 1], x, denoised, steps))
        sigma_down, sigma_up = ancestral_step(sig[i], sig[i + 1], eta)
        x = euler_step(x, denoised, sig[i], sigma_down)  # x0_hat + sigma_down * eps_hat
        if sigma_up > 0:
            x = x + noise_like(x, generator) * (s_noise * sigma_up)
    return x


def sample_ddpm(
    denoiser: DenoiseFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond=None,
    generator: Generators = None,
    callback: Callback = None,
    s_noise: float = 1.0,
) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2): the posterior step, i.e. DDIM with eta = 1."""
    return sample_ddim(denoiser, x, sigmas, cond=cond, generator=generator, callback=callback, eta=1.0, s_noise=s_noise)

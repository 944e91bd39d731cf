"""DPM-Solver++ second-order multistep samplers (Lu et al. 2022, "DPM-Solver++"), as k-diffusion writes them.

Notation: lambda = -log(sigma) (half log-SNR in sigma space), h = lambda_next - lambda. The data-prediction
exponential integrator is exact for a constant denoised:

    x_next = (sigma_next / sigma) x - expm1(-h) * denoised          (Lu et al. 2022, Eq. 9, first order)

and the 2M step replaces ``denoised`` with a linear extrapolation through the previous step's denoised
(Algorithm 2). The first step and any step to sigma = 0 are first order.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffuscope.checks.errors import UsageError, quote
from diffuscope.core.contract import DenoiseFn
from diffuscope.samplers.base import (
    FULL_SDE_NOISE,
    Callback,
    Generators,
    SDENoise,
    StepInfo,
    denoise,
    noise_like,
    prepare,
)

SDE_SOLVER_TYPES = ("midpoint", "heun")


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser: DenoiseFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond=None,
    generator: Generators = None,
    callback: Callback = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2); one NFE per step."""
    sig = prepare(x, sigmas)
    steps = len(sig) - 1
    old_denoised, h_last = None, None
    for i in range(steps):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoise(denoiser, x, sigma, cond)
        if callback is not None:
            callback(StepInfo(i, sigma, sigma_next, x, denoised, steps))
        if sigma_next == 0:
            x = denoised  # h = inf: the exponential integrator lands on denoised
        else:
            h = math.log(sigma / sigma_next)
            if old_denoised is None:
                denoised_d = denoised
            else:
                r = h_last / h
                denoised_d = torch.add(denoised * (1 + 1 / (2 * r)), old_denoised, alpha=-1 / (2 * r))  # Alg. 2, l. 8
            x = torch.add(x * (sigma_next / sigma), denoised_d, alpha=-math.expm1(-h))
            h_last = h
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(
    denoiser: DenoiseFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond=None,
    generator: Generators = None,
    callback: Callback = None,
    noise: SDENoise = FULL_SDE_NOISE,
    solver_type: str = "midpoint",
) -> Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022, Appendix: the SDE variant of Eq. 9 with the 2M correction), as
    k-diffusion's ``sample_dpmpp_2m_sde``. The noise is i.i.d. Gaussian per step (k-diffusion defaults to a
    Brownian tree, which only changes how noise is shared between grids, not the distribution). ``noise``: eta and
    s_noise (eta = 0: the DPM-Solver++(2M) ODE step)."""
    if solver_type not in SDE_SOLVER_TYPES:
        raise UsageError(f"unknown solver_type {quote(solver_type)} (valid: {', '.join(SDE_SOLVER_TYPES)})")
    eta, s_noise = noise.eta, noise.s_noise
    sig = prepare(x, sigmas)
    steps = len(sig) - 1
    old_denoised, h_last = None, None
    for i in range(steps):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoise(denoiser, x, sigma, cond)
        if callback is not None:
            callback(StepInfo(i, sigma, sigma_next, x, denoised, steps))
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma / sigma_next)
            eta_h = eta * h
            phi = -math.expm1(-h - eta_h)
            x = x * (sigma_next / sigma * math.exp(-eta_h)) + denoised * phi
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + (denoised - old_denoised) * ((phi / (-h - eta_h) + 1) / r)
                else:
                    x = x + (denoised - old_denoised) * (0.5 * phi / r)
            if eta:
                x = x + noise_like(x, generator) * (sigma_next * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise)
            h_last = h
        old_denoised = denoised
    return x

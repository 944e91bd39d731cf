"""Euler, Euler ancestral and Heun on the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma.

Karras et al. 2022 (EDM), Algorithms 1 and 2; formulas as k-diffusion's ``sample_euler``, ``sample_euler_ancestral``
and ``sample_heun``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffuscope.core.contract import DenoiseFn
from diffuscope.samplers.base import (
    NO_CHURN,
    Callback,
    Churn,
    Generators,
    StepInfo,
    add_churn,
    ancestral_step,
    denoise,
    euler_step,
    noise_like,
    prepare,
)


@torch.no_grad()
def sample_euler(
    denoiser: DenoiseFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond=None,
    generator: Generators = None,
    callback: Callback = None,
    churn: Churn = NO_CHURN,
) -> Tensor:
    """First-order Euler (Karras et al. 2022, Algorithm 2 without the correction); one NFE per step. ``churn``:
    Algorithm 2's S_churn, S_tmin, S_tmax, S_noise (none by default)."""
    sig = prepare(x, sigmas)
    steps = len(sig) - 1
    for i in range(steps):
        x, sigma_hat = add_churn(x, sig[i], steps, generator, churn)
        denoised = denoise(denoiser, x, sigma_hat, cond)
        if callback is not None:
            callback(StepInfo(i, sig[i], sig[i + 1], x, denoised, steps))
        x = euler_step(x, denoised, sigma_hat, sig[i + 1])
    return x


@torch.no_grad()
def sample_euler_ancestral(
    denoiser: DenoiseFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond=None,
    generator: Generators = None,
    callback: Callback = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """Euler ancestral: an Euler step to sigma_down, then fresh noise of std sigma_up (k-diffusion
    ``sample_euler_ancestral``). eta = 1 is the DDPM posterior step; eta = 0 is plain Euler."""
    sig = prepare(x, sigmas)
    steps = len(sig) - 1
    for i in range(steps):
        denoised = denoise(denoiser, x, sig[i], cond)
        if callback is not None:
            callback(StepInfo(i, sig[i], sig[i + 1], x, denoised, steps))
        sigma_down, sigma_up = ancestral_step(sig[i], sig[i + 1], eta)
        x = euler_step(x, denoised, sig[i], sigma_down)
        if sigma_up > 0:
            x = x + noise_like(x, generator) * (s_noise * sigma_up)
    return x


@torch.no_grad()
def sample_heun(
    denoiser: DenoiseFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond=None,
    generator: Generators = None,
    callback: Callback = None,
    churn: Churn = NO_CHURN,
) -> Tensor:
    """Heun's second-order method (Karras et al. 2022, Algorithm 2). The step to sigma = 0 is a plain Euler step
    (Algorithm 2, line 9), so N steps cost 2N - 1 NFE. ``churn``: Algorithm 2's S_churn, S_tmin, S_tmax, S_noise
    (none by default)."""
    sig = prepare(x, sigmas)
    steps = len(sig) - 1
    for i in range(steps):
        x, sigma_hat = add_churn(x, sig[i], steps, generator, churn)
        denoised = denoise(denoiser, x, sigma_hat, cond)
        if callback is not None:
            callback(StepInfo(i, sig[i], sig[i + 1], x, denoised, steps))
        if sig[i + 1] == 0:
            x = denoised  # Algorithm 2, line 8: the Euler step to sigma = 0 lands on denoised
        else:
            x_2 = euler_step(x, denoised, sigma_hat, sig[i + 1])
            denoised_2 = denoise(denoiser, x_2, sig[i + 1], cond)
            # Algorithm 2, line 11, the trapezoid x + (dt / 2) (d + d_2) with d = (x - D) / sigma, d_2 = (x_2 - D_2)
            # / sigma_next. Since x_2 = x + dt d, it equals x_2 + (dt / 2) (d_2 - d), and d_2 - d = (D - D_2) /
            # sigma_next: one subtraction and one fused add (6 kernels written naively).
            half_dt = 0.5 * (sig[i + 1] - sigma_hat)
            x = torch.add(x_2, denoised - denoised_2, alpha=half_dt / sig[i + 1])
    return x

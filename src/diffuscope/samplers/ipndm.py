"""iPNDM: linear multistep (Adams-Bashforth) on the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma.

Zhang & Chen 2023 (DEIS), "improved PNDM": PNDM's pseudo linear multistep without its Runge-Kutta warm-up, i.e.
Adams-Bashforth of order 1, 2, 3, 4 as the history of derivatives fills up; one NFE per step. Two forms, named as
ComfyUI's ``ipndm`` and ``ipndm_v`` samplers (taken from zju-pi/diff-sampler, Zhou et al. 2024):

- ``sample_ipndm``: the constant-step coefficients (3, -1)/2, (23, -16, 5)/12, (55, -59, 37, -9)/24 applied to the
  uneven sigma steps of the grid as they are. The coefficients assume equal steps, so on a Karras or log-SNR grid
  the error falls only 4x per halving of the step (the tests measure second order), yet at 15-20 steps it is the
  most accurate sampler here on the shipped model (docs/benchmarks.md).
- ``sample_ipndm_v``: the variable-step Adams-Bashforth coefficients, the integral over [sigma_i, sigma_next] of the
  Lagrange polynomial through the stored derivatives (Hairer, Norsett & Wanner, Solving ODEs I, Sec. III.5): each
  step is exact for derivatives that are polynomials in sigma of degree < its order, on any grid (ComfyUI's
  ``ipndm_v`` writes out variable-step coefficients by hand; its order-2 one, (2 + h_n / h_n-1) / 2, is this one).
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffuscope.checks.errors import UsageError, quote
from diffuscope.core.contract import DenoiseFn
from diffuscope.samplers.base import Callback, Generators, StepInfo, denoise, prepare

# Adams-Bashforth coefficients for equal steps, newest derivative first (Hairer et al., Table III.1.1).
AB_COEFFICIENTS = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}
# 2-point Gauss-Legendre on [-1, 1]: exact for the cubic Lagrange polynomials of order-4 Adams-Bashforth.
_GAUSS_NODES = (-(3**-0.5), 3**-0.5)


def _check_order(max_order: int) -> None:
    if isinstance(max_order, bool) or not isinstance(max_order, int) or not 1 <= max_order <= 4:
        raise UsageError(f"iPNDM max_order must be 1, 2, 3 or 4, got {quote(max_order)}")


def variable_step_coefficients(nodes: list[float], start: float, end: float) -> list[float]:
    """Weights w_j with sum_j w_j d(nodes[j]) = the integral from ``start`` to ``end`` of the polynomial through the
    points (nodes[j], d_j): variable-step Adams-Bashforth. ``nodes`` newest first; at most 4 of them."""
    half, mid = (end - start) / 2, (end + start) / 2
    weights = []
    for j, node in enumerate(nodes):
        total = 0.0
        for g in _GAUSS_NODES:
            t = mid + half * g
            basis = 1.0
            for m, other in enumerate(nodes):
                if m != j:
                    basis *= (t - other) / (node - other)
            total += basis
        weights.append(total * half)  # both Gauss-Legendre weights are 1
    return weights


def _ipndm(denoiser, x, sigmas, cond, callback, max_order: int, variable: bool) -> Tensor:
    _check_order(max_order)
    sig = prepare(x, sigmas)
    steps = len(sig) - 1
    history: list[Tensor] = []  # derivatives d_i, newest first
    for i in range(steps):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoise(denoiser, x, sigma, cond)
        if callback is not None:
            callback(StepInfo(i, sigma, sigma_next, x, denoised, steps))
        if sigma_next == 0:
            return denoised  # the step to sigma = 0 lands on denoised (as every sampler here)
        history = [(x - denoised) / sigma, *history][:max_order]
        order = len(history)
        if variable:
            weights = variable_step_coefficients(sig[i::-1][:order], sigma, sigma_next)
        else:
            weights = [(sigma_next - sigma) * b for b in AB_COEFFICIENTS[order]]
        update = history[0] * weights[0]
        for d, w in zip(history[1:], weights[1:], strict=True):
            update = torch.add(update, d, alpha=w)
        x = x + update
    return x


@torch.no_grad()
def sample_ipndm(
    denoiser: DenoiseFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond=None,
    generator: Generators = None,
    callback: Callback = None,
    max_order: int = 4,
) -> Tensor:
    """iPNDM with the constant-step Adams-Bashforth coefficients (ComfyUI ``ipndm``); one NFE per step."""
    return _ipndm(denoiser, x, sigmas, cond, callback, max_order, variable=False)


@torch.no_grad()
def sample_ipndm_v(
    denoiser: DenoiseFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond=None,
    generator: Generators = None,
    callback: Callback = None,
    max_order: int = 4,
) -> Tensor:
    """iPNDM with variable-step Adams-Bashforth coefficients (ComfyUI ``ipndm_v``); one NFE per step."""
    return _ipndm(denoiser, x, sigmas, cond, callback, max_order, variable=True)

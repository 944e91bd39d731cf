"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework"), data prediction, B(h) variants.

Written in sigma space with lambda = -log(sigma), h = lambda_next - lambda; as diffusers'
``UniPCMultistepScheduler`` (predict_x0=True, solver_type bh1/bh2, lower_order_final) computes it:

    predictor UniP-p (Algorithm 2):  x_next = (sigma_next / sigma) x - expm1(-h) D_0 - B(h) sum_k rho_k D1_k
    corrector UniC-p (Algorithm 1):  the same step redone once D(x_next) is known, with one more difference term

where D1_k = (D_k - D_0) / r_k are scaled differences of earlier denoised values, r_k = (lambda_k - lambda_0) / h,
and the rho solve the order conditions R rho = b (their Eq. 8 / Theorem 3.1). B(h) = -h (bh1) or expm1(-h) (bh2).
The corrector reuses the model evaluation that the next predictor needs, so N steps cost N NFE; it raises the
order of accuracy by one. Orders warm up (1, 2, ..., ``order``) and drop again at the end; the step to sigma = 0
returns denoised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from diffuscope.checks.errors import UsageError, quote
from diffuscope.core.contract import DenoiseFn
from diffuscope.samplers.base import Callback, Generators, StepInfo, denoise, prepare

UNIPC_VARIANTS = ("bh1", "bh2")


@dataclass(frozen=True)
class UniPCOptions:
    """UniPC's choices (Zhao et al. 2023): the predictor's ``order`` (1, 2 or 3), the B(h) ``variant`` ("bh1": -h,
    "bh2": expm1(-h)), whether the corrector UniC runs after each step (``use_corrector``) and whether the order
    drops again over the last steps (``lower_order_final``, as diffusers' scheduler)."""

    order: int = 2
    variant: str = "bh2"
    use_corrector: bool = True
    lower_order_final: bool = True

    def __post_init__(self) -> None:
        if self.variant not in UNIPC_VARIANTS:
            raise UsageError(f"unknown UniPC variant {quote(self.variant)} (valid: {', '.join(UNIPC_VARIANTS)})")
        if isinstance(self.order, bool) or not isinstance(self.order, int) or not 1 <= self.order <= 3:
            raise UsageError(f"UniPC order must be 1, 2 or 3, got {quote(self.order)}")


UNIPC_DEFAULTS = UniPCOptions()


def unipc_rhos(h: float, rks: list[float], order: int, variant: str, corrector: bool) -> tuple[float, list[float]]:
    """B(h) and the coefficients rho (float64) for one UniP (``corrector=False``) or UniC step of order ``order``.

    ``rks`` holds r_k for the earlier denoised values, then 1.0 (the new point for the corrector).
    """
    hh = -h  # data prediction: the exponent of the integrator is -h
    h_phi_k = math.expm1(hh) / hh - 1
    b_h = hh if variant == "bh1" else math.expm1(hh)
    factorial = 1
    b = []
    for i in range(1, order + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    if corrector:
        if order == 1:
            return b_h, [0.5]
        n = order
    else:
        if order == 1:
            return b_h, []
        if order == 2:
            return b_h, [0.5]
        n = order - 1
    R = torch.tensor([[rk ** (i - 1) for rk in rks[:n]] for i in range(1, n + 1)], dtype=torch.float64)
    return b_h, torch.linalg.solve(R, torch.tensor(b[:n], dtype=torch.float64)).tolist()


def _uni_step(
    x: Tensor,
    sigma: float,
    sigma_next: float,
    history: list[tuple[float, Tensor]],
    order: int,
    variant: str,
    denoised_next: Tensor | None = None,
) -> Tensor:
    """One UniP step (denoised_next None) or UniC step from (sigma, history[-1]) to sigma_next."""
    lam_0, d_0 = history[-1]
    h = math.log(sigma / sigma_next)
    rks, d1s = [], []
    for k in range(1, order):
        lam_k, d_k = history[-(k + 1)]
        rk = (lam_k - lam_0) / h
        rks.append(rk)
        d1s.append((d_k - d_0) / rk)
    rks.append(1.0)
    b_h, rhos = unipc_rhos(h, rks, order, variant, corrector=denoised_next is not None)
    x_next = x * (sigma_next / sigma) - d_0 * math.expm1(-h)
    res = None
    for rho, d1 in zip(rhos, d1s):
        res = d1 * rho if res is None else res + d1 * rho
    if denoised_next is not None:
        last = (denoised_next - d_0) * rhos[-1]
        res = last if res is None else res + last
    return x_next if res is None else x_next - res * b_h


@torch.no_grad()
def sample_unipc(
    denoiser: DenoiseFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond=None,
    generator: Generators = None,
    callback: Callback = None,
    options: UniPCOptions = UNIPC_DEFAULTS,
) -> Tensor:
    """UniPC-``options.order`` with the corrector (UniC) after every step but the last; one NFE per step.

    Order 2 by default, as diffusers' ``UniPCMultistepScheduler`` (which recommends it for guided sampling): on the
    shipped mnist model at guidance 1.25 it lands closer to the converged sample than order 3 at 10, 15 and 20
    steps (mean RMSE 5.2 / 2.0 / 1.0 grey levels against 10.5 / 2.3 / 1.1, N=256; FD at 10 steps 1.45 against 3.3).

    ``callback`` gets the corrected state x and the denoised value evaluated before the correction (the
    corrector does not call the network again). ``options``: order, variant, use_corrector, lower_order_final."""
    order, variant = options.order, options.variant
    use_corrector, lower_order_final = options.use_corrector, options.lower_order_final
    sig = prepare(x, sigmas)
    steps = len(sig) - 1
    history: list[tuple[float, Tensor]] = []  # (lambda, denoised) of the last `order` evaluations
    last_x, last_order = None, 0
    for i in range(steps):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoise(denoiser, x, sigma, cond)
        if use_corrector and last_x is not None:
            x = _uni_step(last_x, sig[i - 1], sigma, history, last_order, variant, denoised_next=denoised)
        if callback is not None:
            callback(StepInfo(i, sigma, sigma_next, x, denoised, steps))
        history = [*history, (-math.log(sigma), denoised)][-order:]
        step_order = min(order, i + 1, steps - i) if lower_order_final else min(order, i + 1)
        if sigma_next == 0:
            return denoised  # h = inf: the integrator lands on denoised
        last_x, last_order = x, step_order
        x = _uni_step(x, sigma, sigma_next, history, step_order, variant)
    return x

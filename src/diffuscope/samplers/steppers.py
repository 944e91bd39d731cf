"""Samplers one step at a time: ``step(x, denoised, sigma, sigma_next, history) -> (x_next, history)``.

The deterministic samplers whose step needs one network evaluation (at the current state) and some memory of the
path so far, written as single steps with the samplers' own formulas (a test steps each along a grid and compares
it with the sampler function). Tuning searches grids with them (tuning.py), one step at a time from many states;
inversion runs them with sigma_next > sigma, up the probability-flow ODE (inversion.py): every formula here holds
for steps in either direction (Euler up is DDIM inversion, Song et al. 2021, Sec. 4.3 / Dhariwal & Nichol 2021).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from diffuscope.checks.errors import UsageError, quote
from diffuscope.samplers.ipndm import AB_COEFFICIENTS, variable_step_coefficients
from diffuscope.samplers.registry import get_sampler

History = tuple  # a stepper's memory of the path so far (never mutated: a node's history is shared by its children)
Stepper = Callable[[Tensor, Tensor, float, float, History], tuple[Tensor, History]]


def _euler(x: Tensor, denoised: Tensor, sigma: float, sigma_next: float, hist: History) -> tuple[Tensor, History]:
    """Euler = DDIM at eta 0 in sigma space (samplers.base.euler_step)."""
    return torch.lerp(denoised, x, sigma_next / sigma), ()


def _ipndm(x, denoised, sigma, sigma_next, hist, *, variable: bool, max_order: int = 4):
    """iPNDM / iPNDM v (samplers/ipndm.py): Adams-Bashforth on (sigma, d) pairs of the path, newest first. A plain
    function bound with functools.partial (not a closure built at import), so that what runs is always this code."""
    if sigma_next == 0:
        return denoised, ()
    hist = ((sigma, (x - denoised) / sigma), *hist)[:max_order]
    if variable:
        weights = variable_step_coefficients([s for s, _ in hist], sigma, sigma_next)
    else:
        weights = [(sigma_next - sigma) * b for b in AB_COEFFICIENTS[len(hist)]]
    update = hist[0][1] * weights[0]
    for (_, d), w in zip(hist[1:], weights[1:], strict=True):
        update = update + d * w  # not torch.add(alpha=w): w may be a tensor that learns (tuning.learn_grid)
    return x + update, hist


def _dpmpp_2m(x, denoised, sigma, sigma_next, hist):
    """DPM++ 2M (samplers/dpmpp.py, Lu et al. 2022, Algorithm 2): history = (previous denoised, previous h)."""
    if sigma_next == 0:
        return denoised, ()
    h = math.log(sigma / sigma_next)
    if not hist:
        denoised_d = denoised
    else:
        old_denoised, h_last = hist
        r = h_last / h
        denoised_d = torch.add(denoised * (1 + 1 / (2 * r)), old_denoised, alpha=-1 / (2 * r))
    return torch.add(x * (sigma_next / sigma), denoised_d, alpha=-math.expm1(-h)), (denoised, h)


STEPPERS: dict[str, Stepper] = {  # sampler id -> one step
    "euler": _euler,
    "ddim": _euler,
    "ipndm": partial(_ipndm, variable=False),
    "ipndm_v": partial(_ipndm, variable=True),
    "dpmpp_2m": _dpmpp_2m,
}


# steps written in plain tensor arithmetic of the sigmas, so that gradients reach the step times (tuning.learn_grid)
DIFFERENTIABLE = ("euler", "ddim", "ipndm", "ipndm_v")


def _require(sampler: str, allowed, why: str) -> str:
    """The sampler's id if it is in ``allowed``; else a one-line UsageError naming the valid ones."""
    spec = get_sampler(sampler)
    if spec.id not in allowed:
        names = [get_sampler(i).name for i in allowed]
        raise UsageError(f"sampler {quote(spec.name)} {why}; valid: {', '.join(names)}")
    return spec.id


def stepper(sampler: str) -> Stepper:
    """The one-step form of a sampler (STEPPERS); others raise with the list of those that have one."""
    return STEPPERS[_require(sampler, STEPPERS, "has no one-step form here (its step needs more than one network "
                                                "call, or noise)")]


def differentiable_stepper(sampler: str) -> Stepper:
    """The one-step form of a sampler whose step gradients pass through to the sigmas (DIFFERENTIABLE)."""
    return STEPPERS[_require(sampler, DIFFERENTIABLE, "has no step differentiable in sigma (learned step times "
                                                      "need one)")]

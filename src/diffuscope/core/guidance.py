"""Classifier-free guidance as a denoiser wrapper (Ho & Salimans 2022, Eq. 6, written for x0-predictions):

    D(x, sigma, c) = D_u + scale * (D_c - D_u),     D_u = D(x, sigma, uncond), D_c = D(x, sigma, c)

scale 1 is plain conditional sampling (one call, no unconditional batch); scale 0 is unconditional sampling
(one call with the null condition). Otherwise the conditional and unconditional halves go through the network in
ONE batched call. Since the denoiser is affine in the network output for eps/x0/v/EDM preconditioning, guiding
x0_hat is the same as guiding eps_hat or v_hat. Conditions are typed (``conditioning.Cond``): guidance batches them
with ``Cond.cat`` and never looks inside, so class and text models are guided the same way.

A guidance interval (Kynkaanniemi et al. 2024, "Applying Guidance in a Limited Interval Improves Sample and
Distribution Quality in Diffusion Models", Sec. 3) applies the scale only at noise levels sigma_lo < sigma <=
sigma_hi and samples plainly conditionally (one call, no unconditional batch) elsewhere; EDM2 uses (0.28, 5.42].
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffuscope.checks.errors import UsageError, quote
from diffuscope.core.conditioning import Cond, as_cond
from diffuscope.core.contract import DenoiseFn


def check_scale(scale) -> float:
    """A guidance scale as a finite float >= 0 (1 = off)."""
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise UsageError(f"guidance scale must be a number >= 0 (1 = off), got {quote(scale)}") from None
    if not (math.isfinite(scale) and scale >= 0):  # rejects NaN and inf
        raise UsageError(f"guidance scale must be a finite number >= 0 (1 = off), got {scale}")
    return scale


def check_interval(interval) -> tuple[float, float] | None:
    """A guidance interval (sigma_lo, sigma_hi) as floats with 0 <= sigma_lo < sigma_hi (sigma_hi may be inf), or
    None (guidance at every noise level)."""
    if interval is None:
        return None
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise UsageError(f"guidance interval must be two noise levels LO,HI, got {quote(interval)}") from None
    if not 0 <= lo < hi:  # also rejects NaN
        raise UsageError(f"guidance interval must have 0 <= LO < HI (LO < sigma <= HI is guided), got {lo:g},{hi:g}")
    return lo, hi


class CFGDenoiser:
    """Wrap ``denoiser(x, sigma, cond)``; ``uncond`` is the null condition (a ``Cond`` of one row or one row per
    image; for class models also an int null class index, as before). ``interval`` = (sigma_lo, sigma_hi) guides
    only where sigma_lo < sigma <= sigma_hi (None: everywhere)."""

    def __init__(self, denoiser: DenoiseFn, scale: float, uncond: Cond | int | Tensor,
                 interval: tuple[float, float] | None = None):
        self.denoiser = denoiser
        self.scale = check_scale(scale)
        self.uncond = as_cond(uncond)
        self.interval = check_interval(interval)

    def _row_scale(self, sigma: Tensor, n: int) -> float | Tensor:
        """The scale per row: ``self.scale`` inside the interval, 1 outside (a float when all rows agree)."""
        if self.interval is None or self.scale == 1:
            return self.scale
        lo, hi = self.interval
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).expand(n)
        inside = (sigma > lo) & (sigma <= hi)
        if bool(inside.all()):
            return self.scale
        if not bool(inside.any()):
            return 1.0
        return torch.where(inside, self.scale, 1.0)

    def __call__(self, x: Tensor, sigma: Tensor, cond=None) -> Tensor:
        cond = as_cond(cond)
        scale = self._row_scale(sigma, len(x)) if cond is not None else 1.0
        if isinstance(scale, float) and scale == 1:
            return self.denoiser(x, sigma, cond)  # unconditional request, guidance off or outside its interval
        cond = cond.to(x.device).expand(len(x))
        uncond = self.uncond.to(x.device).expand(len(x))
        if isinstance(scale, float) and scale == 0:
            return self.denoiser(x, sigma, uncond)
        sigma = torch.as_tensor(sigma, device=x.device)
        sigma = sigma.expand(len(x)) if sigma.ndim == 0 else sigma
        both = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), Cond.cat([cond, uncond]))
        d_cond, d_uncond = both.chunk(2)
        if isinstance(scale, Tensor):  # mixed rows (not a sampler's call): per-row scale
            scale = scale.to(d_cond.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return d_uncond + (d_cond - d_uncond) * scale

    def __repr__(self) -> str:
        interval = "" if self.interval is None else f", interval={self.interval}"
        return f"CFGDenoiser(scale={self.scale}, uncond={type(self.uncond).__name__}{interval})"

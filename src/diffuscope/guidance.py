"""Classifier-free guidance as a denoiser wrapper (Ho & Salimans 2022, Eq. 6, written for x0-predictions):

    D(x, sigma, c) = D_u + scale * (D_c - D_u),     D_u = D(x, sigma, uncond), D_c = D(x, sigma, c)

scale 1 is plain conditional sampling (one call, no unconditional batch); scale 0 is unconditional sampling
(one call with the null condition). Otherwise the conditional and unconditional halves go through the network in
ONE batched call. Since the denoiser is affine in the network output for eps/x0/v/EDM preconditioning, guiding
x0_hat is the same as guiding eps_hat or v_hat.

A guidance interval (Kynkaanniemi et al. 2024, "Applying Guidance in a Limited Interval Improves Sample and
Distribution Quality in Diffusion Models", Sec. 3) applies the scale only at noise levels sigma_lo < sigma <=
sigma_hi and samples plainly conditionally (one call, no unconditional batch) elsewhere; EDM2 uses (0.28, 5.42].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from diffuscope.conditioning import Cond
from diffuscope.errors import UsageError
from diffuscope.precond import SHARED_SIGMA, shared_sigma_batch


def check_interval(interval) -> tuple[float, float] | None:
    """A guidance interval (sigma_lo, sigma_hi) as floats with 0 <= sigma_lo < sigma_hi (sigma_hi may be inf), or
    None (guidance at every noise level)."""
    if interval is None:
        return None
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise UsageError(f"guidance interval must be two noise levels LO,HI, got {interval!r}") from None
    if not 0 <= lo < hi:  # also rejects NaN
        raise UsageError(f"guidance interval must have 0 <= LO < HI (LO < sigma <= HI is guided), got {lo:g},{hi:g}")
    return lo, hi


class CFGDenoiser:
    """Wrap ``denoiser(x, sigma, cond)``; ``uncond`` is the null condition (for the class-conditional nets the
    null class index ``num_classes``, as an int or an int64 tensor of shape [] or [B]). ``interval`` = (sigma_lo,
    sigma_hi) guides only where sigma_lo < sigma <= sigma_hi (None: everywhere)."""

    def __init__(self, denoiser: Callable, scale: float, uncond: int | Tensor,
                 interval: tuple[float, float] | None = None):
        scale = float(scale)
        if not scale >= 0:  # also rejects NaN
            raise UsageError(f"guidance scale must be >= 0 (1 = off), got {scale}")
        self.denoiser = denoiser
        self.scale = scale
        self.uncond = uncond
        self.interval = check_interval(interval)

    def _row_scale(self, sigma: Tensor | float, n: int) -> float | Tensor:
        """The scale per row: ``self.scale`` inside the interval, 1 outside (a float when the rows agree)."""
        if self.interval is None or self.scale == 1:
            return self.scale
        lo, hi = self.interval
        shared = getattr(sigma, SHARED_SIGMA, None)
        if shared is None and not isinstance(sigma, Tensor):
            shared = float(sigma)
        if shared is not None:
            return self.scale if lo < shared <= hi else 1.0
        sigma = sigma.expand(n) if sigma.ndim == 0 else sigma
        inside = (sigma > lo) & (sigma <= hi)
        if bool(inside.all()):
            return self.scale
        if not bool(inside.any()):
            return 1.0
        return torch.where(inside, self.scale, 1.0)

    def _uncond_like(self, cond: Tensor) -> Tensor:
        uncond = torch.as_tensor(self.uncond, dtype=cond.dtype, device=cond.device)
        return uncond.expand(cond.shape) if uncond.ndim == 0 else uncond

    def __call__(self, x: Tensor, sigma: Tensor, cond=None) -> Tensor:
        scale = self._row_scale(sigma, len(x)) if cond is not None else 1.0
        if isinstance(scale, float) and scale == 1:
            return self.denoiser(x, sigma, cond)  # unconditional request, guidance off or outside its interval
        if isinstance(cond, Cond):  # a typed condition (text): batched by its own cat/expand
            cond, uncond = cond.expand(len(x)), self.uncond.expand(len(x))
        else:
            cond = torch.as_tensor(cond, device=x.device)
            if cond.ndim == 0:
                cond = cond.expand(len(x))
            uncond = self._uncond_like(cond)
        if isinstance(scale, float) and scale == 0:
            return self.denoiser(x, sigma, uncond)
        shared = getattr(sigma, SHARED_SIGMA, None)
        if shared is not None:  # a sampler's shared sigma stays shared (and cached) for the doubled batch
            sigma_both = shared_sigma_batch(shared, 2 * len(x), sigma.device, sigma.dtype)
        else:
            sigma = torch.as_tensor(sigma, device=x.device)
            sigma = sigma.expand(len(x)) if sigma.ndim == 0 else sigma
            sigma_both = torch.cat([sigma, sigma])
        both_cond = Cond.cat([cond, uncond]) if isinstance(cond, Cond) else torch.cat([cond, uncond])
        both = self.denoiser(torch.cat([x, x]), sigma_both, both_cond)
        d_cond, d_uncond = both.chunk(2)
        if isinstance(scale, Tensor):  # mixed rows (not a sampler's call): per-row scale
            scale = scale.to(d_cond.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return d_uncond + (d_cond - d_uncond) * scale

    def __repr__(self) -> str:
        interval = "" if self.interval is None else f", interval={self.interval}"
        return f"CFGDenoiser(scale={self.scale}, uncond={self.uncond!r}{interval})"

"""Classifier-free guidance as a denoiser wrapper (Ho & Salimans 2022, Eq. 6, written for x0-predictions):

    D(x, sigma, c) = D_u + scale * (D_c - D_u),     D_u = D(x, sigma, uncond), D_c = D(x, sigma, c)

scale 1 is plain conditional sampling (one call, no unconditional batch); scale 0 is unconditional sampling
(one call with the null condition). Otherwise the conditional and unconditional halves go through the network in
ONE batched call. Since the denoiser is affine in the network output for eps/x0/v/EDM preconditioning, guiding
x0_hat is the same as guiding eps_hat or v_hat.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from diffuscope.errors import UsageError
from diffuscope.precond import SHARED_SIGMA, shared_sigma_batch


class CFGDenoiser:
    """Wrap ``denoiser(x, sigma, cond)``; ``uncond`` is the null condition (for the class-conditional nets the
    null class index ``num_classes``, as an int or an int64 tensor of shape [] or [B])."""

    def __init__(self, denoiser: Callable, scale: float, uncond: int | Tensor):
        scale = float(scale)
        if not scale >= 0:  # also rejects NaN
            raise UsageError(f"guidance scale must be >= 0 (1 = off), got {scale}")
        self.denoiser = denoiser
        self.scale = scale
        self.uncond = uncond

    def _uncond_like(self, cond: Tensor) -> Tensor:
        uncond = torch.as_tensor(self.uncond, dtype=cond.dtype, device=cond.device)
        return uncond.expand(cond.shape) if uncond.ndim == 0 else uncond

    def __call__(self, x: Tensor, sigma: Tensor, cond=None) -> Tensor:
        if cond is None or self.scale == 1:
            return self.denoiser(x, sigma, cond)  # unconditional request, or guidance off: one plain call
        cond = torch.as_tensor(cond, device=x.device)
        if cond.ndim == 0:
            cond = cond.expand(len(x))
        uncond = self._uncond_like(cond)
        if self.scale == 0:
            return self.denoiser(x, sigma, uncond)
        shared = getattr(sigma, SHARED_SIGMA, None)
        if shared is not None:  # a sampler's shared sigma stays shared (and cached) for the doubled batch
            sigma_both = shared_sigma_batch(shared, 2 * len(x), sigma.device, sigma.dtype)
        else:
            sigma = torch.as_tensor(sigma, device=x.device)
            sigma = sigma.expand(len(x)) if sigma.ndim == 0 else sigma
            sigma_both = torch.cat([sigma, sigma])
        both = self.denoiser(torch.cat([x, x]), sigma_both, torch.cat([cond, uncond]))
        d_cond, d_uncond = both.chunk(2)
        return d_uncond + (d_cond - d_uncond) * self.scale

    def __repr__(self) -> str:
        return f"CFGDenoiser(scale={self.scale}, uncond={self.uncond!r})"

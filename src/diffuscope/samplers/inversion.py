"""Inversion: from an image back to its noise, by running the probability-flow ODE upwards, and back again.

The ODE dx/dsigma = (x - D(x, sigma)) / sigma is deterministic, so it can be integrated from sigma_min up to
sigma_max as well as down: the image, taken as the state at sigma_min, maps to a state at sigma_max, i.e. noise
(DDIM inversion: Song et al. 2021, Sec. 4.3; Dhariwal & Nichol 2021, Appendix F). Generating from that noise on the
same grid comes back to the image up to the discretisation error of both directions, which shrinks at the
sampler's order (the tests measure it on the exact Gaussian denoiser). Upwards the samplers' own one-step formulas
are used (samplers/steppers.py): Euler / DDIM, iPNDM (Adams-Bashforth up to order 4), iPNDM v, DPM++ 2M.

Latent models: ``encode(image) -> x`` before inverting and ``decode(x) -> image`` after regenerating (identity for
pixel models); errors are always measured on decoded images. Guidance during inversion is allowed, but the
guided ODE is not the ODE of any one distribution and is stiff at large scales, so inversion with guidance > 1
reconstructs worse (Mokady et al. 2023, "Null-text Inversion", Sec. 3, which fixes it by optimising the null
embedding: out of scope here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import Tensor

from diffuscope.core.schedules import check_sigmas
from diffuscope.samplers import get_sampler
from diffuscope.samplers.steppers import stepper

GREY_LEVEL = 2 / 255  # one 8-bit grey level in [-1, 1] units


def _identity(x: Tensor) -> Tensor:
    return x


def invert(denoiser: Callable, images: Tensor, sigmas: Tensor, *, sampler: str = "iPNDM", cond=None,
           encode: Callable[[Tensor], Tensor] = _identity, batch_size: int = 64) -> Tensor:
    """The state at ``sigmas[0]`` (sigma_max) that the ODE carries ``images`` to, integrating up the generation
    grid ``sigmas`` (steps + 1 sigmas ending at 0) from its last nonzero sigma: steps - 1 steps, one network
    evaluation each. Divide by ``sigmas[0]`` for noise in standard-normal units."""
    step = stepper(sampler)
    up = check_sigmas(sigmas)[-2::-1]  # sigma_min, ..., sigma_max
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = encode(images[start:start + batch_size])
            c = None if cond is None else cond[start:start + batch_size]
            hist: tuple = ()
            for sigma, sigma_next in pairwise(up):
                sig = torch.full((len(x),), sigma, dtype=torch.float64, device=x.device)
                denoised = denoiser(x, sig, c).to(x.dtype)
                x, hist = step(x, denoised, sigma, sigma_next, hist)
            out.append(x)
    return torch.cat(out)


def regenerate(denoiser: Callable, x: Tensor, sigmas: Tensor, *, sampler: str = "iPNDM", cond=None,
               decode: Callable[[Tensor], Tensor] = _identity, batch_size: int = 64) -> Tensor:
    """Generate from the state ``x`` at ``sigmas[0]`` down the grid with the sampler; decoded images."""
    spec = get_sampler(sampler)
    out = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            c = None if cond is None else cond[start:start + batch_size]
            out.append(decode(spec.fn(denoiser, x[start:start + batch_size], sigmas.to(x.device), cond=c)))
    return torch.cat(out)


@dataclass(frozen=True)
class RoundTrip:
    noise: Tensor  # [N, C, H, W] (or latent shape): the inverted state at sigma_max / sigma_max
    images: Tensor  # [N, C, H, W] regenerated (decoded) from it
    rmse: Tensor  # [N] per-image RMSE to the originals in [-1, 1] units

    @property
    def rmse_grey(self) -> Tensor:
        """Per-image RMSE in 8-bit grey levels (1 = 2/255 in [-1, 1] units)."""
        return self.rmse / GREY_LEVEL


def round_trip(denoiser: Callable, images: Tensor, sigmas: Tensor, *, sampler: str = "iPNDM", cond=None,
               regen_cond=None, codec=None, batch_size: int = 64) -> RoundTrip:
    """Invert ``images`` (conditioned on ``cond``) and regenerate them on the same grid, conditioned on
    ``regen_cond`` (default ``cond``: the reconstruction; another prompt: the simplest edit). ``codec`` (anything
    with ``encode``/``decode``, e.g. a ``DiffusionModel``: the identity for a pixel model) maps images to the
    sampler's space and back; None: pixels."""
    encode, decode = (_identity, _identity) if codec is None else (codec.encode, codec.decode)
    x = invert(denoiser, images, sigmas, sampler=sampler, cond=cond, encode=encode, batch_size=batch_size)
    regen = regenerate(denoiser, x, sigmas, sampler=sampler, cond=cond if regen_cond is None else regen_cond,
                       decode=decode, batch_size=batch_size)
    rmse = ((regen.float() - images.float()) ** 2).flatten(1).mean(1).sqrt()
    return RoundTrip(x / float(sigmas[0]), regen, rmse)

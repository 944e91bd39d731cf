"""Batch-invariant generation: an image depends on its seed and settings only, not on the batch it was made in.

Noise is already drawn per image (one generator per image, docs/architecture.md), but the numbers of a batched
network call are not per image: CPU convolution and attention kernels pick their blocking and summation order by
batch size, so row i of a batch of 3 differs from the same input alone by ~1e-6 (the emoji model: up to 1.1e-6 in
latents, 9e-7 in decoded pixels), which now and then rounds a pixel to the next grey level: `sample --from` an image
made in a batch of 2 did not reproduce it.

The mechanism, in one place: ``per_image(denoiser)`` evaluates the denoiser a sampler calls (the guided one, when
guided) one image at a time, and ``decode_per_image(model, x)`` decodes one image at a time (the decoder is a network
too), so every network call has the same shape whatever the batch size: an unguided image is a call of one row, a
guided one a call of two (its conditional and unconditional rows, as classifier-free guidance batches them, so a
batch of one is computed exactly as before). The sampler's own arithmetic is elementwise per image and needs
nothing. ``GenerationRequest.batch_invariant`` switches it on; the cost is measured by
bench/bench_batch_invariance.py (docs/benchmarks.md, "Batch-invariant generation").
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffuscope.core.conditioning import as_cond
from diffuscope.core.contract import DenoiseFn
from diffuscope.core.model import DiffusionModel


class PerImageDenoiser:
    """``denoiser(x, sigma, cond)`` evaluated one row at a time and concatenated: row i depends on row i's inputs
    only. ``sigma`` is shared (a float or 0-d tensor) or per row [B]; ``cond`` is a ``Cond``, class labels or None.
    ``schedule`` and other attributes are the wrapped denoiser's, where it has them."""

    def __init__(self, denoiser: DenoiseFn):
        self.denoiser = denoiser

    @property
    def schedule(self):
        return self.denoiser.schedule

    def __call__(self, x: Tensor, sigma: Tensor | float, cond=None) -> Tensor:
        if len(x) <= 1:
            return self.denoiser(x, sigma, cond)
        cond = as_cond(cond)
        sigma = torch.as_tensor(sigma, dtype=torch.float64) if not isinstance(sigma, Tensor) else sigma
        rows = []
        for i in range(len(x)):
            sigma_i = sigma if sigma.ndim == 0 else sigma[i : i + 1]
            rows.append(self.denoiser(x[i : i + 1], sigma_i, None if cond is None else cond[i]))
        return torch.cat(rows)

    def __getattr__(self, name: str):  # parametrization, coefficients, net, ... of the wrapped denoiser
        if name == "denoiser":
            raise AttributeError(name)
        return getattr(self.denoiser, name)


def per_image(denoiser: DenoiseFn) -> PerImageDenoiser:
    """``denoiser`` evaluated one image (row) at a time; idempotent."""
    return denoiser if isinstance(denoiser, PerImageDenoiser) else PerImageDenoiser(denoiser)


def decode_per_image(model: DiffusionModel, x: Tensor) -> Tensor:
    """``model.decode`` one image at a time (a pixel model's decode is the identity: returned as it is)."""
    if model.codec is None or len(x) <= 1:
        return model.decode(x)
    return torch.cat([model.decode(x[i : i + 1]) for i in range(len(x))])

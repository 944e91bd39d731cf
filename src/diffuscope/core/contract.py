"""The one contract every sampler, metric and picture speaks to (docs/architecture.md, "one contract"): a denoiser
D(x, sigma, cond) -> x0_hat in sigma space (Karras et al. 2022, Eq. 2-3: x = x0 + sigma n).

``DenoiseFn`` is the call alone: what a sampler needs (a guided or counting wrapper is one). ``Denoiser`` adds the
noise schedule it was trained on: what a ``DiffusionModel`` holds and grids are made for. ``precond.Denoiser`` (an
``nn.Module`` around a network, EDM Eq. 7) is the implementation every trained network gets; reference denoisers,
adapters and wrappers satisfy the protocols structurally.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from diffuscope.core.schedules import Schedule


@runtime_checkable
class DenoiseFn(Protocol):
    """D(x, sigma, cond) -> x0_hat: x [B, C, H, W]; sigma a float, 0-d tensor or one level per row [B]; cond a
    ``conditioning.Cond`` with B rows (or one), class labels, or None."""

    def __call__(self, x: Tensor, sigma: Tensor | float, cond: Any = None) -> Tensor: ...


@runtime_checkable
class Denoiser(DenoiseFn, Protocol):
    """A ``DenoiseFn`` with the noise schedule it was trained on (its grids, timesteps and sigma range)."""

    @property
    def schedule(self) -> Schedule: ...

"""Preconditioning: turn a raw network F into the one denoiser D(x, sigma, cond) -> x0_hat.

Karras et al. 2022 (EDM), Eq. 7 and Table 1:

    D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))

Each parametrisation is one set of coefficients. For the discrete-time VP models (eps, x0, v) the network input is
the VP state x / sqrt(1 + sigma^2) and c_noise is the (fractional) timestep t(sigma); EDM uses sigma_data and
c_noise = ln(sigma) / 4.

The training loss is written in the network's own target space, ||F - (x0 - c_skip x) / c_out||^2, which is the
x0-space error weighted by 1 / c_out^2: eps-prediction's noise MSE, x0-prediction's image MSE, v-prediction's v MSE
and EDM's lambda(sigma) weighting all fall out of this one line (EDM, Eq. 8).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from diffuscope.checks.errors import choices_error
from diffuscope.core.schedules import Schedule, VPSchedule

PARAMETRIZATIONS = ("eps", "x0", "v", "edm")


class Coefficients(NamedTuple):
    """EDM Eq. 7's coefficients at each noise level of a batch: float64 tensors [B]."""

    c_skip: Tensor
    c_out: Tensor
    c_in: Tensor
    c_noise: Tensor


def _column(v: Tensor, x: Tensor) -> Tensor:
    """A [B] tensor as [B, 1, 1, ...] in x's dtype, to scale each sample of x."""
    return v.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


def _sigma_batch(sigma: Tensor | float, x: Tensor) -> Tensor:
    """The noise level of each sample of x as a float64 tensor [B] (a float or 0-d tensor is shared by all)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
    return sigma.expand(len(x)) if sigma.ndim == 0 else sigma


class Denoiser(nn.Module):
    """D(x, sigma, cond) -> x0_hat around a network ``net(x_in, c_noise, cond)``. Subclasses give the coefficients.

    ``sigma`` is a float, a 0-d tensor or one noise level per sample [B]; the coefficients are computed in float64
    for every call and cast to x's dtype where they meet x. A denoiser keeps no state besides ``net``, ``schedule``
    (and EDM's ``sigma_data``): calls from several threads are as safe as the network's own forward."""

    parametrization = ""

    def __init__(self, net: nn.Module | Callable, schedule: Schedule):
        super().__init__()
        self.net = net
        self.schedule = schedule

    def coefficients(self, sigma: Tensor) -> Coefficients:
        """c_skip, c_out, c_in, c_noise for the noise levels ``sigma`` (float64 [B])."""
        raise NotImplementedError

    def call_net(self, x_in: Tensor, c_noise: Tensor, cond=None) -> Tensor:
        """F(x_in, c_noise, cond): the one place the network is called. An adapter for a network with another
        signature overrides this."""
        return self.net(x_in, c_noise, cond)

    def raw(self, x: Tensor, sigma: Tensor | float, cond=None) -> tuple[Tensor, Coefficients]:
        """The raw network output F(c_in x, c_noise, cond) and the coefficients used."""
        c = self.coefficients(_sigma_batch(sigma, x))
        return self.call_net(_column(c.c_in, x) * x, c.c_noise.to(x.dtype), cond), c

    def forward(self, x: Tensor, sigma: Tensor | float, cond=None) -> Tensor:
        """EDM Eq. 7: D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)."""
        f, c = self.raw(x, sigma, cond)
        return _column(c.c_skip, x) * x + _column(c.c_out, x) * f.to(x.dtype)

    def loss(
        self, x0: Tensor, sigma: Tensor, noise: Tensor, cond=None, *, min_snr_gamma: float | None = None
    ) -> Tensor:
        """Per-sample training loss [B] at noise levels ``sigma`` [B].

        Default: the parametrisation's own objective, mean((F - F_target)^2) (EDM Eq. 8). With ``min_snr_gamma`` the
        x0-space error, i.e. the target-space error times c_out^2, is weighted by min(SNR, gamma) instead (Hang et
        al. 2023, Eq. 7; SNR = 1 / sigma^2).
        """
        sigma = _sigma_batch(sigma, x0)
        x = x0 + _column(sigma, x0) * noise
        f, c = self.raw(x, sigma, cond)
        target = (x0 - _column(c.c_skip, x0) * x) / _column(c.c_out, x0)
        per_sample = ((f.float() - target.float()) ** 2).flatten(1).mean(1)
        if min_snr_gamma is not None:
            snr = sigma**-2
            per_sample = per_sample * (torch.clamp(snr, max=min_snr_gamma) * c.c_out**2).to(per_sample.dtype)
        return per_sample


class _VPDenoiser(Denoiser):
    """The discrete-time VP models (eps/x0/v): the network sees x / sqrt(1 + sigma^2) at timestep t(sigma)
    (EDM Table 1, 'VP' column, with c_noise the model's own timestep)."""

    schedule: VPSchedule

    def _vp_inputs(self, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """c_in = 1 / sqrt(sigma^2 + 1) and c_noise = t(sigma), the schedule's fractional timestep."""
        return (sigma**2 + 1) ** -0.5, self.schedule.t_from_sigma(sigma.cpu()).to(sigma.device)


class EpsDenoiser(_VPDenoiser):
    """eps-prediction (Ho et al. 2020): x0_hat = x - sigma eps_hat (EDM Table 1, 'VP' column)."""

    parametrization = "eps"

    def coefficients(self, sigma: Tensor) -> Coefficients:
        c_in, c_noise = self._vp_inputs(sigma)
        return Coefficients(torch.ones_like(sigma), -sigma, c_in, c_noise)


class X0Denoiser(_VPDenoiser):
    """x0-prediction: the network output is the clean image (c_skip = 0, c_out = 1)."""

    parametrization = "x0"

    def coefficients(self, sigma: Tensor) -> Coefficients:
        c_in, c_noise = self._vp_inputs(sigma)
        return Coefficients(torch.zeros_like(sigma), torch.ones_like(sigma), c_in, c_noise)


class VDenoiser(_VPDenoiser):
    """v-prediction (Salimans & Ho 2022): v = alpha eps - sigma_vp x0, so x0_hat = alpha x_vp - sigma_vp v_hat,
    i.e. c_skip = 1 / (sigma^2 + 1), c_out = -sigma / sqrt(sigma^2 + 1)."""

    parametrization = "v"

    def coefficients(self, sigma: Tensor) -> Coefficients:
        c_in, c_noise = self._vp_inputs(sigma)
        return Coefficients(1 / (sigma**2 + 1), -sigma * c_in, c_in, c_noise)


class EDMDenoiser(Denoiser):
    """Karras et al. 2022, Table 1 ('ours'): c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2),
    c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = ln(sigma) / 4, with sd = sigma_data."""

    parametrization = "edm"

    def __init__(self, net: nn.Module | Callable, schedule: Schedule, sigma_data: float = 0.5):
        super().__init__(net, schedule)
        self.sigma_data = sigma_data

    def coefficients(self, sigma: Tensor) -> Coefficients:
        sd = self.sigma_data
        norm = (sigma**2 + sd**2).sqrt()
        return Coefficients(sd**2 / norm**2, sigma * sd / norm, 1 / norm, sigma.log() / 4)


def make_denoiser(
    parametrization: str, net: nn.Module | Callable, schedule: Schedule, *, sigma_data: float = 0.5
) -> Denoiser:
    """The wrapper for a parametrisation name; eps/x0/v need a discrete VP schedule."""
    if parametrization not in PARAMETRIZATIONS:
        raise choices_error("parametrization", parametrization, PARAMETRIZATIONS)
    if parametrization == "edm":
        return EDMDenoiser(net, schedule, sigma_data)
    if not isinstance(schedule, VPSchedule):
        raise choices_error(
            f"schedule for {parametrization}-prediction", schedule.name, ("linear", "cosine", "scaled_linear")
        )
    return {"eps": EpsDenoiser, "x0": X0Denoiser, "v": VDenoiser}[parametrization](net, schedule)

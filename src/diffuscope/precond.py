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

import math
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

import torch
from torch import Tensor, nn

from diffuscope.errors import choices_error
from diffuscope.schedules import Schedule, VPSchedule

PARAMETRIZATIONS = ("eps", "x0", "v", "edm")

# A [B] sigma tensor made by ``shared_sigma_batch`` carries its one value as this Python attribute.
SHARED_SIGMA = "shared_sigma"


@lru_cache(maxsize=1024)
def _cached_sigma_batch(sigma: float, n: int, dtype: torch.dtype, device: torch.device, inference: bool) -> Tensor:
    batch = torch.full((), sigma, dtype=dtype, device=device).expand(n)
    setattr(batch, SHARED_SIGMA, sigma)
    return batch


def shared_sigma_batch(sigma: float, n: int, device: torch.device | str = "cpu", dtype=None) -> Tensor:
    """The [n] noise-level tensor of a batch that shares ``sigma`` (float64, float32 on MPS where float64 is
    missing): one value expanded (stride 0), carrying the float as attribute ``shared_sigma``, so ``Denoiser``
    reads it without a tensor op. Cached per (sigma, n, dtype, device, inference mode): a sampler's grid repeats
    its sigmas, and right after a network call (cold caches) building the tensor and reading it back cost ~100 us
    per step, as much as the step's arithmetic (bench/bench_samplers.py, Heun vs diffusers). Read-only: a cached
    tensor written in place is rebuilt (inference tensors keep no version counter; a batch of n > 1 cannot be
    written in place at all)."""
    device = device if isinstance(device, torch.device) else torch.device(device)
    if dtype is None:
        dtype = torch.float32 if device.type == "mps" else torch.float64
    inference = torch.is_inference_mode_enabled()
    batch = _cached_sigma_batch(sigma, n, dtype, device, inference)
    if not inference and batch._version:  # written in place since it was cached
        _cached_sigma_batch.cache_clear()
        batch = _cached_sigma_batch(sigma, n, dtype, device, inference)
    return batch


class Coefficients(NamedTuple):
    """Tensors [B] (float64) for a tensor sigma, Python floats for a float sigma (the sampler's case)."""

    c_skip: Tensor | float
    c_out: Tensor | float
    c_in: Tensor | float
    c_noise: Tensor | float


def _column(v: Tensor, x: Tensor) -> Tensor:
    return v.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


def _log(sigma: Tensor | float) -> Tensor | float:
    if isinstance(sigma, Tensor):
        return sigma.log()
    return math.log(sigma) if sigma > 0 else -math.inf


def _full_like(sigma: Tensor | float, value: float) -> Tensor | float:
    return torch.full_like(sigma, value) if isinstance(sigma, Tensor) else value


class Denoiser(nn.Module):
    """D(x, sigma, cond) -> x0_hat around a network ``net(x_in, c_noise, cond)``. Subclasses give the coefficients."""

    parametrization = ""

    def __init__(self, net: nn.Module | Callable, schedule: Schedule):
        super().__init__()
        self.net = net
        self.schedule = schedule
        self._shared_memo: dict[tuple, Coefficients] = {}

    def __setattr__(self, name: str, value) -> None:
        if name in ("schedule", "sigma_data") and "_shared_memo" in self.__dict__:
            self._shared_memo.clear()  # the memoised coefficients depend on these
        super().__setattr__(name, value)

    def coefficients(self, sigma: Tensor | float) -> Coefficients:
        """c_skip, c_out, c_in, c_noise for ``sigma``: one formula, evaluated on a float64 tensor [B] or on a
        Python float (then float-only, a few microseconds: the per-step cost of a sampler)."""
        raise NotImplementedError

    def _sigma(self, sigma: Tensor | float, x: Tensor) -> Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
        return sigma.expand(len(x)) if sigma.ndim == 0 else sigma.to(torch.float64)

    def _shared_sigma(self, sigma: Tensor | float) -> float | None:
        """The one noise level of a batch that shares it (what samplers pass), or None (mixed sigmas, or a
        non-CPU device, where the check would cost a device sync). Independent of train/eval mode: a wrapper built
        around a network (the diffusers adapter) starts in training mode and must still take the fast path."""
        if isinstance(sigma, float | int):
            return float(sigma)
        if sigma.device.type != "cpu":
            return None
        if sigma.ndim == 0:
            return float(sigma)
        first = sigma[0]
        if sigma.stride(0) == 0:  # one value expanded: shared by construction
            return float(first)
        return float(first) if bool((sigma == first).all()) else None

    def _memoise_coefficients(self, key: tuple) -> Coefficients:
        """Float c_skip, c_out, c_in and the [B] c_noise tensor for a batch sharing one sigma, memoised per key =
        (sigma, batch size, dtype, device, inference mode): a sampler's grid repeats its sigmas, and right after a
        network call (cold caches) computing them cost ~50 us per call (bench/bench_samplers.py, Heun vs
        diffusers). Setting ``schedule`` (or EDM's ``sigma_data``) clears the memo; a c_noise written in place is
        rebuilt (``forward`` checks its version)."""
        sigma, n, dtype, device, _ = key
        if len(self._shared_memo) >= 4096:
            self._shared_memo.clear()
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        c_noise = torch.full((n,), c_noise, dtype=dtype, device=device)
        c = self._shared_memo[key] = Coefficients(c_skip, c_out, c_in, c_noise)
        return c

    def call_net(self, x_in: Tensor, c_noise: Tensor, cond=None) -> Tensor:
        """F(x_in, c_noise, cond): the one place the network is called. An adapter for a network with another
        signature overrides this (one Python frame per call, instead of a wrapper module's two)."""
        return self.net(x_in, c_noise, cond)

    def raw(self, x: Tensor, sigma: Tensor, cond=None) -> tuple[Tensor, Coefficients]:
        """The raw network output F and the coefficients used (float64 coefficients, cast at use)."""
        sigma = self._sigma(sigma, x)
        c = self.coefficients(sigma)
        x_in = _column(c.c_in, x) * x
        return self.call_net(x_in, c.c_noise.to(x.dtype), cond), c

    def forward(self, x: Tensor, sigma: Tensor | float, cond=None) -> Tensor:
        # The sampler's case, in as few Python frames and tensor ops as possible (each costs microseconds right
        # after a network call): one sigma for the batch, memoised float coefficients, one fused add.
        shared = getattr(sigma, SHARED_SIGMA, None)  # made by shared_sigma_batch (what samplers pass)
        if shared is None:
            shared = self._shared_sigma(sigma)
        if shared is not None:
            inference = torch.is_inference_mode_enabled()
            key = (shared, len(x), x.dtype, x.device, inference)
            c = self._shared_memo.get(key)
            if c is None or (not inference and c.c_noise._version):
                c = self._memoise_coefficients(key)
            f = self.call_net(x * c.c_in, c.c_noise, cond)
            return torch.add(x if c.c_skip == 1 else x * c.c_skip, f if f.dtype == x.dtype else f.to(x.dtype),
                             alpha=c.c_out)
        f, c = self.raw(x, self._sigma(sigma, x), cond)
        return _column(c.c_skip, x) * x + _column(c.c_out, x) * f.to(x.dtype)

    def loss(
        self, x0: Tensor, sigma: Tensor, noise: Tensor, cond=None, *, min_snr_gamma: float | None = None
    ) -> Tensor:
        """Per-sample training loss [B] at noise levels ``sigma`` [B].

        Default: the parametrisation's own objective, mean((F - F_target)^2). With ``min_snr_gamma`` the x0-space
        error is weighted by min(SNR, gamma) instead (Hang et al. 2023, Eq. 7; SNR = 1 / sigma^2).
        """
        sigma = self._sigma(sigma, x0)
        x = x0 + _column(sigma, x0) * noise
        f, c = self.raw(x, sigma, cond)
        target = (x0 - _column(c.c_skip, x0) * x) / _column(c.c_out, x0)
        per_sample = ((f.float() - target.float()) ** 2).flatten(1).mean(1)
        if min_snr_gamma is not None:
            snr = sigma**-2
            per_sample = per_sample * (torch.clamp(snr, max=min_snr_gamma) * c.c_out**2).to(per_sample.dtype)
        return per_sample


class _VPDenoiser(Denoiser):
    """Shared by eps/x0/v: the network sees x_vp = x / sqrt(1 + sigma^2) at timestep t(sigma)."""

    schedule: VPSchedule

    def _vp_inputs(self, sigma: Tensor | float) -> tuple[Tensor | float, Tensor | float]:
        c_in = (sigma**2 + 1) ** -0.5
        if isinstance(sigma, Tensor):
            return c_in, self.schedule.t_from_sigma(sigma.cpu()).to(sigma.device)
        return c_in, self.schedule.t_from_sigma_float(sigma)


class EpsDenoiser(_VPDenoiser):
    """eps-prediction (Ho et al. 2020): x0_hat = x - sigma * eps_hat (EDM Table 1, 'VP' column)."""

    parametrization = "eps"

    def coefficients(self, sigma: Tensor | float) -> Coefficients:
        c_in, c_noise = self._vp_inputs(sigma)
        return Coefficients(_full_like(sigma, 1.0), -sigma, c_in, c_noise)


class X0Denoiser(_VPDenoiser):
    """x0-prediction: the network output is the clean image."""

    parametrization = "x0"

    def coefficients(self, sigma: Tensor | float) -> Coefficients:
        c_in, c_noise = self._vp_inputs(sigma)
        return Coefficients(_full_like(sigma, 0.0), _full_like(sigma, 1.0), c_in, c_noise)


class VDenoiser(_VPDenoiser):
    """v-prediction (Salimans & Ho 2022): v = alpha eps - sigma_vp x0, so x0_hat = alpha x_vp - sigma_vp v_hat,
    i.e. c_skip = 1 / (sigma^2 + 1), c_out = -sigma / sqrt(sigma^2 + 1)."""

    parametrization = "v"

    def coefficients(self, sigma: Tensor | float) -> Coefficients:
        c_in, c_noise = self._vp_inputs(sigma)
        return Coefficients(1 / (sigma**2 + 1), -sigma * c_in, c_in, c_noise)


class EDMDenoiser(Denoiser):
    """Karras et al. 2022, Table 1 ('ours'): c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2),
    c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = ln(sigma) / 4."""

    parametrization = "edm"

    def __init__(self, net: nn.Module | Callable, schedule: Schedule, sigma_data: float = 0.5):
        super().__init__(net, schedule)
        self.sigma_data = sigma_data

    def coefficients(self, sigma: Tensor | float) -> Coefficients:
        sd2 = self.sigma_data**2
        norm = (sigma**2 + sd2) ** 0.5
        return Coefficients(sd2 / norm**2, sigma * self.sigma_data / norm, 1 / norm, _log(sigma) / 4)


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

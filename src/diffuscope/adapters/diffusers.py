"""Run diffuscope's samplers on a diffusers ``UNet2DModel`` trained with a diffusers scheduler.

The scheduler's betas give alpha_bar (``alphas_cumprod``, computed by diffusers itself so the numbers are
bit-identical), hence a ``VPSchedule``; its ``prediction_type`` picks the preconditioning wrapper from
``precond``: epsilon -> EpsDenoiser, v_prediction -> VDenoiser, sample -> X0Denoiser. The UNet receives the VP
input x / sqrt(1 + sigma^2), the (fractional) timestep t(sigma) and ``class_labels=cond``.

diffusers is imported inside the functions: diffuscope imports without it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from diffuscope.checks.errors import UsageError, choices_error
from diffuscope.core.conditioning import ClassCond, TextCond
from diffuscope.core.precond import Denoiser, EpsDenoiser, VDenoiser, X0Denoiser
from diffuscope.core.schedules import ZERO_SNR_ALPHA_BAR, VPSchedule


class _DiffusersNet:
    """Calls a diffusers UNet as the network F: the timestep is c_noise; a ``TextCond``'s token embeddings go in as
    ``encoder_hidden_states`` (a ``UNet2DConditionModel``, as StableDiffusionPipeline calls it: without the mask,
    the padding tokens are attended as in training), class labels (a ``ClassCond`` or an int tensor) as
    ``class_labels`` (a ``UNet2DModel``). A half-precision UNet (``net_dtype``) gets its inputs cast and its output
    comes back in float32. A UNet that also predicts the variance (2C output channels) is cut to its first C
    channels. The UNet is the denoiser's ``net`` itself (no wrapper module: one Python frame less per network call,
    see bench_samplers.py)."""

    net_dtype: torch.dtype | None = None  # set for a UNet whose weights are not float32
    round_timesteps = False  # the UNet sees round(t), as diffusers' DPM-Solver/UniPC/DEIS Karras grids give it

    def call_net(self, x_in: Tensor, c_noise: Tensor, cond=None) -> Tensor:
        if self.round_timesteps:
            c_noise = c_noise.round()
        if self.net_dtype is not None:
            x_in = x_in.to(self.net_dtype)
        if isinstance(cond, TextCond):
            tokens = cond.tokens if self.net_dtype is None else cond.tokens.to(self.net_dtype)
            out = self.net(x_in, c_noise, tokens, return_dict=False)[0]
        else:
            labels = cond.labels if isinstance(cond, ClassCond) else cond
            out = self.net(x_in, c_noise, class_labels=labels, return_dict=False)[0]
        out = out if self.net_dtype is None else out.float()
        return out[:, : x_in.shape[1]] if out.shape[1] == 2 * x_in.shape[1] else out


class DiffusersEpsDenoiser(_DiffusersNet, EpsDenoiser):
    """EpsDenoiser around a diffusers UNet (prediction_type "epsilon")."""


class DiffusersVDenoiser(_DiffusersNet, VDenoiser):
    """VDenoiser around a diffusers UNet (prediction_type "v_prediction")."""


class DiffusersX0Denoiser(_DiffusersNet, X0Denoiser):
    """X0Denoiser around a diffusers UNet (prediction_type "sample")."""


PREDICTION_TYPES = {
    "epsilon": DiffusersEpsDenoiser,
    "v_prediction": DiffusersVDenoiser,
    "sample": DiffusersX0Denoiser,
}


def _config(scheduler_or_config) -> Mapping:
    config = getattr(scheduler_or_config, "config", scheduler_or_config)
    if not isinstance(config, Mapping):
        raise UsageError(f"expected a diffusers scheduler or its config, got {type(scheduler_or_config).__name__}")
    return config


def schedule_from_diffusers(scheduler_or_config) -> VPSchedule:
    """The VPSchedule of a diffusers scheduler (or config): alpha_bar = its ``alphas_cumprod`` (betas, trained
    betas and the zero-terminal-SNR rescale computed by diffusers' DDPMScheduler, in its float32)."""
    from diffusers import DDPMScheduler

    alpha_bar = getattr(scheduler_or_config, "alphas_cumprod", None)
    if alpha_bar is None:
        config = dict(_config(scheduler_or_config))
        alpha_bar = DDPMScheduler.from_config(config).alphas_cumprod
    alpha_bar = torch.as_tensor(alpha_bar).detach().cpu().to(torch.float64).clone()
    zero_snr = bool(alpha_bar[-1] <= 0 or alpha_bar[-1] >= alpha_bar[-2])
    if zero_snr:
        # A finite sigma_max, as diffusers' Euler scheduler does with 2^-24, but kept below alpha_bar[T-2] (4.2e-9
        # for the rescaled linear schedule) so sigma stays monotonic, as schedules.make_schedule does.
        alpha_bar[-1] = min(ZERO_SNR_ALPHA_BAR, float(alpha_bar[-2]) / 2)
    return VPSchedule(alpha_bar, name="diffusers" + ("+zsnr" if zero_snr else ""))


def denoiser_from_diffusers(unet: nn.Module, scheduler_or_config) -> Denoiser:
    """D(x, sigma, cond) -> x0_hat for a diffusers UNet2DModel and its scheduler (or scheduler config)."""
    config = _config(scheduler_or_config)
    prediction_type = config.get("prediction_type", "epsilon")
    if prediction_type not in PREDICTION_TYPES:
        raise choices_error("diffusers prediction_type", prediction_type, PREDICTION_TYPES)
    return PREDICTION_TYPES[prediction_type](unet, schedule_from_diffusers(scheduler_or_config))


def sigmas_for_timesteps(schedule: VPSchedule, timesteps: Tensor) -> Tensor:
    """The sigma grid (float64, final 0 appended) that visits a diffusers scheduler's ``timesteps``. Consecutive
    repeats (the interleaved grids of second-order schedulers: Heun's [t0, t1, t1, t2, t2, ...]) are visited once."""
    ts = torch.as_tensor(timesteps).reshape(-1).tolist()
    ts = [t for i, t in enumerate(ts) if i == 0 or t != ts[i - 1]]
    sigmas = schedule.sigma(torch.tensor(ts, dtype=torch.float64))  # whole timesteps: exactly the table's values
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])

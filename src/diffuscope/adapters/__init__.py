"""Adapters that turn other libraries' models into the one denoiser contract D(x, sigma, cond) -> x0_hat.

Each adapter imports its library lazily, so diffuscope imports without it.
"""

from diffuscope.adapters.diffusers import denoiser_from_diffusers, schedule_from_diffusers, sigmas_for_timesteps

__all__ = ["denoiser_from_diffusers", "schedule_from_diffusers", "sigmas_for_timesteps"]

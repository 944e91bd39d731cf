"""Samplers: pure functions ``sample_<name>(denoiser, x, sigmas, *, cond, generator, callback, **opts) -> x``.

``x`` is the starting state in sigma space (``initial_noise(shape, generators, sigmas[0])``); ``sigmas`` is a
strictly decreasing float64 grid ending at 0 (``schedules.make_grid``). ``SAMPLERS`` lists them all;
``get_sampler(name)`` looks one up by display name, ComfyUI id or alias. A sampler's paper knobs come grouped in a
small option object: ``Churn`` (Euler, Heun), ``SDENoise`` (the DPM++ SDE samplers), ``UniPCOptions``;
``SamplerSpec.keywords`` turns the flat names (``{"s_churn": 0.3}``) into it.
"""

from diffuscope.samplers.base import (
    Churn,
    CountingDenoiser,
    SDENoise,
    StepInfo,
    ancestral_step,
    euler_step,
    initial_noise,
    make_generators,
    noise_like,
    randn,
    resolve_seed,
    to_d,
)
from diffuscope.samplers.ddim import sample_ddim, sample_ddpm
from diffuscope.samplers.dpmpp import sample_dpmpp_2m, sample_dpmpp_2m_sde
from diffuscope.samplers.dpmpp_3m import sample_dpmpp_3m_sde
from diffuscope.samplers.euler import sample_euler, sample_euler_ancestral, sample_heun
from diffuscope.samplers.ipndm import sample_ipndm, sample_ipndm_v
from diffuscope.samplers.registry import SAMPLERS, SamplerSpec, get_sampler, sampler_names
from diffuscope.samplers.unipc import UniPCOptions, sample_unipc

__all__ = [
    "SAMPLERS",
    "Churn",
    "CountingDenoiser",
    "SDENoise",
    "SamplerSpec",
    "StepInfo",
    "UniPCOptions",
    "ancestral_step",
    "euler_step",
    "get_sampler",
    "initial_noise",
    "make_generators",
    "noise_like",
    "randn",
    "resolve_seed",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_3m_sde",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_heun",
    "sample_ipndm",
    "sample_ipndm_v",
    "sample_unipc",
    "sampler_names",
    "to_d",
]

"""The explicit sampler table: display names as AUTOMATIC1111 shows them, ComfyUI ids as ids/aliases."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from diffuscope.checks.errors import UsageError, choices_error, quote
from diffuscope.samplers.base import Churn, SDENoise
from diffuscope.samplers.ddim import sample_ddim, sample_ddpm
from diffuscope.samplers.dpmpp import sample_dpmpp_2m, sample_dpmpp_2m_sde
from diffuscope.samplers.dpmpp_3m import sample_dpmpp_3m_sde
from diffuscope.samplers.euler import sample_euler, sample_euler_ancestral, sample_heun
from diffuscope.samplers.ipndm import sample_ipndm, sample_ipndm_v
from diffuscope.samplers.unipc import UniPCOptions, sample_unipc


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler: ``fn(denoiser, x, sigmas, *, cond, generator, callback, **opts)``, its convergence ``order``
    (global order on the probability-flow ODE with default options, eta = 0 for the SDE samplers, as the tests
    measure it on an exact Gaussian denoiser), the network evaluations ``nfe(steps)`` a run of ``steps`` steps
    costs, and whether it is deterministic with its default options. ``grouped``: the keyword and the option
    object (``Churn``, ``SDENoise``, ``UniPCOptions``) that gather the sampler's paper knobs, for ``keywords``."""

    name: str  # display name (AUTOMATIC1111)
    id: str  # ComfyUI id
    aliases: tuple[str, ...]
    fn: Callable
    order: int
    nfe: Callable[[int], int]
    deterministic: bool
    grouped: tuple[str, type] | None = None

    def option_names(self) -> list[str]:
        """The flat option names this sampler takes (``GenerationRequest.sampler_options``): its own keywords,
        with the option object's keyword replaced by that object's fields."""
        own = [p.name for p in inspect.signature(self.fn).parameters.values()
               if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _RUN_KEYWORDS]
        if self.grouped is None:
            return own
        keyword, cls = self.grouped
        return [f.name for f in fields(cls)] + [name for name in own if name != keyword]

    def keywords(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """The sampler's keyword arguments for flat options, e.g. {"s_churn": 0.3, "s_noise": 0.7} ->
        {"churn": Churn(s_churn=0.3, s_noise=0.7)}; an unknown name is refused, naming the valid ones."""
        options = dict(options or {})
        valid = self.option_names()
        unknown = [key for key in options if key not in valid]
        if unknown:
            raise UsageError(f"unknown option{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(quote(k) for k in unknown)} for sampler {self.name} "
                             f"(valid: {', '.join(valid) or 'none'})")
        if self.grouped is None:
            return options
        keyword, cls = self.grouped
        group = {f.name: options.pop(f.name) for f in fields(cls) if f.name in options}
        if group:
            options[keyword] = cls(**group)
        return options


_RUN_KEYWORDS = ("cond", "generator", "callback")


def _one_per_step(steps: int) -> int:
    return steps


def _heun_nfe(steps: int) -> int:
    return 2 * steps - 1  # no correction on the last step to sigma = 0


SAMPLERS: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec("DDPM", "ddpm", (), sample_ddpm, 1, _one_per_step, False),
    "ddim": SamplerSpec("DDIM", "ddim", (), sample_ddim, 1, _one_per_step, True),
    "euler": SamplerSpec("Euler", "euler", (), sample_euler, 1, _one_per_step, True, ("churn", Churn)),
    "euler_ancestral": SamplerSpec(
        "Euler a", "euler_ancestral", ("euler_a",), sample_euler_ancestral, 1, _one_per_step, False
    ),
    "heun": SamplerSpec("Heun", "heun", (), sample_heun, 2, _heun_nfe, True, ("churn", Churn)),
    "dpmpp_2m": SamplerSpec("DPM++ 2M", "dpmpp_2m", ("dpm++_2m",), sample_dpmpp_2m, 2, _one_per_step, True),
    "dpmpp_2m_sde": SamplerSpec(
        "DPM++ 2M SDE", "dpmpp_2m_sde", ("dpm++_2m_sde",), sample_dpmpp_2m_sde, 2, _one_per_step, False,
        ("noise", SDENoise),
    ),
    "dpmpp_3m_sde": SamplerSpec(
        "DPM++ 3M SDE", "dpmpp_3m_sde", ("dpm++_3m_sde",), sample_dpmpp_3m_sde, 2, _one_per_step, False,
        ("noise", SDENoise),
    ),  # order 2, not 3: see dpmpp_3m.py (the D2 term as k-diffusion and diffusers write it)
    "uni_pc": SamplerSpec(
        "UniPC", "uni_pc", ("unipc", "uni_pc_bh2"), sample_unipc, 3, _one_per_step, True, ("options", UniPCOptions)
    ),
    # UniP-2 (the default order) + UniC: the corrector raises the order by one (Zhao et al. 2023, Theorem 3.1)
    "ipndm": SamplerSpec("iPNDM", "ipndm", (), sample_ipndm, 2, _one_per_step, True),
    # constant-step Adams-Bashforth-4 coefficients on the grid's uneven steps: second order as the steps shrink
    "ipndm_v": SamplerSpec("iPNDM v", "ipndm_v", ("ipndm-v",), sample_ipndm_v, 3, _one_per_step, True),
    # variable-step Adams-Bashforth-4: 9.6-11.4x less error per halving at 16-128 steps (its Euler start step caps
    # the order as the steps shrink further)
}

_LOOKUP: dict[str, str] = {}
for _id, _spec in SAMPLERS.items():
    for _key in (_spec.name, _spec.id, *_spec.aliases):
        _LOOKUP[_key.lower()] = _id


def get_sampler(name: str) -> SamplerSpec:
    """Look a sampler up by display name, id or alias (case-insensitive); unknown names list the valid ones."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in _LOOKUP:
        raise choices_error("sampler", name, [f"{s.name} ({s.id})" for s in SAMPLERS.values()])
    return SAMPLERS[_LOOKUP[key]]


def sampler_names() -> list[str]:
    """Display names in table order."""
    return [s.name for s in SAMPLERS.values()]

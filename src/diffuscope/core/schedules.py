"""Noise schedules, the forward process, sampling grids and training noise-level densities.

Everything lives in *sigma space* (docs/architecture.md): ``x = x0 + sigma * noise``. A discrete-time
variance-preserving (VP) schedule with cumulative signal ``alpha_bar[t]`` (t = 0..T-1, diffusers' ``alphas_cumprod``
convention) maps to it by ``sigma = sqrt((1 - alpha_bar) / alpha_bar)`` and ``x_vp = x / sqrt(1 + sigma^2)``.

The forward process ("forward is fixed, simple math") is here in both forms: the closed form q(x_t | x_0)
(Ho et al. 2020, Eq. 4) and the step-by-step chain q(x_t | x_{t-1}) (Ho et al. 2020, Eq. 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import torch
from torch import Tensor

from diffuscope.checks.errors import UsageError, choices_error, quote

SCHEDULES = ("linear", "cosine", "scaled_linear", "edm")
GRIDS = ("trailing", "leading", "linspace", "karras", "logsnr", "tuned")
TUNED = "tuned"  # a grid searched per model and sampler (tuning.py), stored with the model (tuned_grids.py)
DISCRETE_GRIDS = ("trailing", "leading", "linspace")
INTERPOLATIONS = ("log", "linear")  # of sigma between a discrete schedule's integer timesteps (VPSchedule.sigma)
# diffusers sets the last alpha_bar of a zero-terminal-SNR schedule to this, so that sigma_max stays finite.
ZERO_SNR_ALPHA_BAR = 2.0**-24


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = "edm"  # linear | cosine | scaled_linear (discrete VP, T steps) | edm (continuous sigma)
    num_timesteps: int = 1000  # T for the discrete VP schedules
    beta_start: float | None = None  # None = the schedule's published value (1e-4 linear, 0.00085 scaled_linear)
    beta_end: float | None = None  # None = the schedule's published value (0.02 linear, 0.012 scaled_linear)
    zero_terminal_snr: bool = False  # rescale to zero terminal SNR (Lin et al. 2024, Algorithm 1)
    sigma_min: float = 0.002  # edm range (Karras et al. 2022, Table 1)
    sigma_max: float = 80.0


# --- beta / alpha_bar families ---------------------------------------------------------------------------------


def linear_betas(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """Ho et al. 2020, Sec. 4: betas linear from 1e-4 to 0.02."""
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def scaled_linear_betas(num_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> Tensor:
    """Stable Diffusion's schedule: linear in sqrt(beta)."""
    return torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2


def cosine_betas(num_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal 2021, Eq. 17: alpha_bar(t) = f(t)/f(0), f(t) = cos((t/T + s)/(1 + s) * pi/2)^2; betas
    clipped at 0.999."""

    def f(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - f((i + 1) / num_timesteps) / f(i / num_timesteps), max_beta) for i in range(num_timesteps)]
    return torch.tensor(betas, dtype=torch.float64)


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Lin et al. 2024, Algorithm 1: shift and scale sqrt(alpha_bar) so that its last value is exactly 0."""
    sqrt_ab = torch.cumprod(1 - betas, 0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    alpha_bar = sqrt_ab**2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1 - alphas


# --- schedules ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class VPSchedule:
    """A discrete-time VP schedule: ``alpha_bar[t]`` for t = 0..T-1 (float64).

    ``sigma(t)`` accepts fractional t, interpolated between integer steps in log sigma (``interpolation="log"``,
    k-diffusion's ``DiscreteSchedule``) or in sigma (``"linear"``: diffusers' Euler-family schedulers,
    ``np.interp(t, arange(T), sigmas)``), so a continuous sigma grid can drive a discrete model; ``t_from_sigma`` is
    its inverse. Integer t is a table lookup either way.
    """

    alpha_bar: Tensor
    name: str = "linear"
    # The grid "N steps" means by default (a diffusers folder's timestep_spacing / use_karras_sigmas and
    # steps_offset); None: trailing (Lin et al. 2024).
    default_spacing: str | None = None
    steps_offset: int = 1
    interpolation: str = "log"  # "log" | "linear": how sigma(t) interpolates between integer timesteps
    # steps -> (sigmas ending at 0, timesteps): the default grid computed by its owner's own rule (a diffusers
    # folder's scheduler, adapters.pipeline.scheduler_grid), or None where it has none; None: ``make_grid``'s.
    native_grid: Callable[[int], tuple[Tensor, Tensor] | None] | None = field(default=None, repr=False)
    log_sigmas: Tensor = field(init=False, repr=False)

    def __post_init__(self):
        ab = self.alpha_bar.to(torch.float64)
        if ab.ndim != 1 or len(ab) < 2 or not bool(((ab > 0) & (ab <= 1)).all()):
            raise ValueError("alpha_bar must be a 1-D tensor with values in (0, 1]")
        if not bool((ab[1:] < ab[:-1]).all()):
            raise ValueError("alpha_bar must be strictly decreasing")
        object.__setattr__(self, "alpha_bar", ab)
        if self.interpolation not in INTERPOLATIONS:
            raise choices_error("sigma interpolation", self.interpolation, INTERPOLATIONS)
        object.__setattr__(self, "log_sigmas", 0.5 * torch.log((1 - ab) / ab))

    is_discrete = True

    @property
    def num_timesteps(self) -> int:
        return len(self.alpha_bar)

    @property
    def betas(self) -> Tensor:
        return 1 - torch.cat([self.alpha_bar[:1], self.alpha_bar[1:] / self.alpha_bar[:-1]])

    @property
    def sigma_min(self) -> float:
        return float(self.log_sigmas[0].exp())

    @property
    def sigma_max(self) -> float:
        return float(self.log_sigmas[-1].exp())

    def sigma(self, t: Tensor | float) -> Tensor:
        """sigma(t) = sqrt((1 - alpha_bar(t)) / alpha_bar(t)); fractional t interpolates log sigma."""
        if isinstance(t, Tensor) and not t.is_floating_point():  # integer timesteps: a lookup, no interpolation
            return self.log_sigmas[t.clamp(0, self.num_timesteps - 1)].exp()
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0, self.num_timesteps - 1)
        low = t.floor().long()
        high = (low + 1).clamp(max=self.num_timesteps - 1)
        w = t - low
        if self.interpolation == "linear":
            table = self.log_sigmas.exp()
            return (1 - w) * table[low] + w * table[high]
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def t_from_sigma(self, sigma: Tensor | float) -> Tensor:
        """The inverse of ``sigma(t)`` (fractional t), clamped to [0, T-1]."""
        log_sigma = torch.as_tensor(sigma, dtype=torch.float64).log()
        high = torch.searchsorted(self.log_sigmas, log_sigma.reshape(-1)).reshape(log_sigma.shape)
        high = high.clamp(1, self.num_timesteps - 1)
        low = high - 1
        lo, hi = self.log_sigmas[low], self.log_sigmas[high]
        if self.interpolation == "linear":
            lo, hi, log_sigma = lo.exp(), hi.exp(), log_sigma.exp()
        w = ((log_sigma - lo) / (hi - lo)).clamp(0, 1)
        return low + w

    def alpha_bar_at(self, t: Tensor | float) -> Tensor:
        return 1 / (1 + self.sigma(t) ** 2)

    def snr(self, t: Tensor | float) -> Tensor:
        """SNR(t) = alpha_bar / (1 - alpha_bar) = 1 / sigma^2."""
        return self.sigma(t) ** -2

    def alpha_bar_after(self, k: int) -> float:
        """alpha_bar after k forward steps, k = 0..T (k = 0 is the clean image): the lessons' 'step k of 1000'."""
        if not 0 <= k <= self.num_timesteps:
            raise UsageError(f"forward step {k} is outside 0..{self.num_timesteps}")
        return 1.0 if k == 0 else float(self.alpha_bar[k - 1])


@dataclass(frozen=True)
class EDMSchedule:
    """The continuous sigma range of Karras et al. 2022 (EDM): no timesteps, only sigma in [sigma_min, sigma_max]."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    name: str = "edm"
    is_discrete = False

    def snr(self, sigma: Tensor | float) -> Tensor:
        return torch.as_tensor(sigma, dtype=torch.float64) ** -2


Schedule = VPSchedule | EDMSchedule


def make_schedule(config: ScheduleConfig) -> Schedule:
    """Build the schedule a config names. Unknown names fail with the valid ones."""
    family, T = config.kind, config.num_timesteps
    if family not in SCHEDULES:
        raise choices_error("schedule", family, SCHEDULES)
    if family == "edm":
        if not 0 < config.sigma_min < config.sigma_max:
            raise UsageError(f"need 0 < sigma_min < sigma_max, got {config.sigma_min}, {config.sigma_max}")
        return EDMSchedule(config.sigma_min, config.sigma_max)
    if T < 2:
        raise UsageError(f"num_timesteps must be at least 2, got {T}")
    if family == "linear":
        betas = linear_betas(T, config.beta_start or 1e-4, config.beta_end or 0.02)
    elif family == "scaled_linear":
        betas = scaled_linear_betas(T, config.beta_start or 0.00085, config.beta_end or 0.012)
    else:
        betas = cosine_betas(T)
    if config.zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    alpha_bar = torch.cumprod(1 - betas, 0)
    if config.zero_terminal_snr:
        alpha_bar = alpha_bar.clone()
        # A finite sigma_max, as diffusers does with 2^-24; for the rescaled linear schedule alpha_bar[T-2] is already
        # 4.2e-9 < 2^-24, which would make sigma non-monotonic there, so take the smaller of the two.
        alpha_bar[-1] = min(ZERO_SNR_ALPHA_BAR, float(alpha_bar[-2]) / 2)
    name = family + ("+zsnr" if config.zero_terminal_snr else "")
    return VPSchedule(alpha_bar, name=name)


# --- the forward process ---------------------------------------------------------------------------------------


def _per_sample(v: Tensor, x: Tensor) -> Tensor:
    return torch.as_tensor(v, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))


def add_noise(x0: Tensor, sigma: Tensor, noise: Tensor) -> Tensor:
    """Sigma space: x = x0 + sigma * noise (Karras et al. 2022, Eq. 1 with s(t) = 1)."""
    return x0 + _per_sample(sigma, x0) * noise


def q_sample(x0: Tensor, alpha_bar: Tensor | float, noise: Tensor) -> Tensor:
    """Closed form q(x_t | x_0) = N(sqrt(alpha_bar) x_0, (1 - alpha_bar) I) (Ho et al. 2020, Eq. 4)."""
    ab = _per_sample(torch.as_tensor(alpha_bar, dtype=torch.float64).expand(len(x0)), x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def q_step(x_prev: Tensor, beta: float, noise: Tensor) -> Tensor:
    """One step of the chain q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I) (Ho et al. 2020, Eq. 2)."""
    return math.sqrt(1 - beta) * x_prev + math.sqrt(beta) * noise


def forward_chain(
    x0: Tensor, schedule: VPSchedule, keep: list[int], *, generator: torch.Generator | None = None
) -> dict[int, Tensor]:
    """Run the chain step by step from x_0 and keep the states after the listed step counts k (0..T)."""
    for k in keep:
        schedule.alpha_bar_after(k)  # validates the range
    betas = schedule.betas.tolist()
    wanted, out, x = set(keep), {}, x0
    if 0 in wanted:
        out[0] = x0
    for k in range(1, max(keep, default=0) + 1):
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = q_step(x, betas[k - 1], noise)
        if k in wanted:
            out[k] = x
    return out


def to_vp(x: Tensor, sigma: Tensor) -> Tensor:
    """Sigma-space state -> VP-space state: x_vp = x / sqrt(1 + sigma^2)."""
    return x / _per_sample((1 + torch.as_tensor(sigma, dtype=torch.float64) ** 2).sqrt(), x)


# --- sampling grids --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SigmaGrid:
    """The noise levels a sampler visits: ``steps + 1`` strictly decreasing sigmas ending at 0 (float64).

    ``timesteps`` holds the discrete timesteps for a discrete schedule's spacing (None otherwise); it is always
    reported so users can see what "25 steps" meant.
    """

    sigmas: Tensor
    spacing: str
    timesteps: Tensor | None = None

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    def describe(self) -> dict:
        d = {"spacing": self.spacing, "sigmas": [round(float(s), 6) for s in self.sigmas]}
        if self.timesteps is not None:  # fractional where a diffusers scheduler's grid has them (Euler linspace)
            d["timesteps"] = [int(t) if float(t).is_integer() else round(float(t), 4) for t in self.timesteps]
        return d


def discrete_timesteps(num_timesteps: int, steps: int, spacing: str = "trailing", offset: int = 1) -> Tensor:
    """Timesteps (descending) for a discrete model, as diffusers' ``timestep_spacing`` computes them.

    trailing: round(arange(T, 0, -T/n)) - 1 -> 999, 899, ..., 99 for T=1000, n=10 (Lin et al. 2024, Table 2);
    leading: arange(n) * (T // n) + offset, reversed -> 901, ..., 1 (Stable Diffusion's steps_offset=1);
    linspace: round(linspace(0, T-1, n)), reversed.
    """
    if spacing not in DISCRETE_GRIDS:
        raise choices_error("timestep spacing", spacing, DISCRETE_GRIDS)
    if not 1 <= steps <= num_timesteps:
        raise UsageError(f"steps must be in 1..{num_timesteps} for this discrete model, got {steps}")
    if spacing == "trailing":
        ts = torch.round(torch.arange(num_timesteps, 0, -num_timesteps / steps, dtype=torch.float64)) - 1
    elif spacing == "leading":
        ts = (torch.arange(steps, dtype=torch.float64) * (num_timesteps // steps)).flip(0) + offset
        ts = ts.clamp(max=num_timesteps - 1)
    else:
        ts = torch.round(torch.linspace(0, num_timesteps - 1, steps, dtype=torch.float64)).flip(0)
    return ts.long()


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. 2022, Eq. 5: sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
    inv_min, inv_max = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (inv_max + ramp * (inv_min - inv_max)) ** rho


def logsnr_sigmas(steps: int, sigma_min: float, sigma_max: float) -> Tensor:
    """Uniform in log-SNR (= uniform in log sigma), as DPM-Solver's 'logSNR' spacing."""
    if steps == 1:
        return torch.tensor([sigma_max], dtype=torch.float64)
    return torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64).exp()


def make_grid(schedule: Schedule, steps: int, spacing: str | None = None, *, rho: float = 7.0,
              tuned: Mapping[int, Sequence[float]] | None = None) -> SigmaGrid:
    """The sigma grid for ``steps`` sampler steps. Default spacing: trailing for discrete, karras for continuous.
    Spacing "tuned" takes the grid from ``tuned`` ({steps: sigmas ending at 0}, one sampler's tuned grids:
    ``tuned_grids.tuned_table``)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UsageError(f"steps must be a positive integer, got {quote(steps)}")
    default = getattr(schedule, "default_spacing", None) or ("trailing" if schedule.is_discrete else "karras")
    spacing = spacing or default
    if spacing not in GRIDS:
        raise choices_error("grid spacing", spacing, GRIDS)
    if spacing == TUNED:
        return tuned_sigma_grid(tuned, steps)
    native = getattr(schedule, "native_grid", None)
    made = native(steps) if native is not None and spacing == default else None  # the owner's rule, if any
    if made is not None:
        return SigmaGrid(made[0], spacing, made[1])
    zero = torch.zeros(1, dtype=torch.float64)
    if spacing in DISCRETE_GRIDS:
        if not schedule.is_discrete:
            raise UsageError(f"spacing {quote(spacing)} needs a discrete-time model (valid here: karras, logsnr)")
        ts = discrete_timesteps(schedule.num_timesteps, steps, spacing, schedule.steps_offset)
        return SigmaGrid(torch.cat([schedule.sigma(ts), zero]), spacing, ts)
    if spacing == "karras":
        sigmas = karras_sigmas(steps, schedule.sigma_min, schedule.sigma_max, rho)
    else:
        sigmas = logsnr_sigmas(steps, schedule.sigma_min, schedule.sigma_max)
    return SigmaGrid(torch.cat([sigmas, zero]), spacing)


def tuned_sigma_grid(tuned: Mapping[int, Sequence[float]] | None, steps: int) -> SigmaGrid:
    """The grid ``tuned[steps]`` (exact sigmas ending at 0) as a SigmaGrid with spacing "tuned"."""
    if not tuned:
        raise UsageError("spacing 'tuned' needs grids tuned for this model and sampler: run `diffuscope "
                         "tune-steps --model M --sampler S --steps ... --out DIR --install`")
    if steps not in tuned:
        raise UsageError(f"no tuned grid for {steps} steps (tuned: {', '.join(map(str, sorted(tuned)))})")
    sigmas = torch.tensor([float(s) for s in tuned[steps]], dtype=torch.float64)
    check_sigmas(sigmas)
    return SigmaGrid(sigmas, TUNED)


def check_sigmas(sigmas: Tensor) -> list[float]:
    """A sampler's precondition (docs/architecture.md: 'Sigma grids are data'): strictly decreasing, last = 0. Returns
    the grid as Python floats (float64), for the samplers' per-step scalar arithmetic."""
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise ValueError(f"sigmas must be 1-D with at least 2 entries, got shape {tuple(sigmas.shape)}")
    values = sigmas.detach().to(torch.float64).cpu().tolist()
    if values[-1] != 0.0:
        raise ValueError(f"the last sigma must be 0, got {values[-1]}")
    if not all(a > b for a, b in pairwise(values)):  # also rejects NaN
        raise ValueError("sigmas must be strictly decreasing")
    return values


# --- training noise-level densities ----------------------------------------------------------------------------


def sample_training_sigmas(
    schedule: Schedule,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    p_mean: float = -1.2,
    p_std: float = 1.2,
) -> Tensor:
    """Noise levels for one training batch (float64 [B]).

    Discrete VP: t ~ U{0..T-1} (Ho et al. 2020, Algorithm 1). EDM: ln(sigma) ~ N(P_mean, P_std^2)
    (Karras et al. 2022, Table 1).
    """
    if schedule.is_discrete:
        t = torch.randint(0, schedule.num_timesteps, (batch_size,), generator=generator)
        return schedule.sigma(t)
    log_sigma = p_mean + p_std * torch.randn(batch_size, generator=generator, dtype=torch.float64)
    return log_sigma.exp()

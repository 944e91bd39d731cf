"""Measuring the lesson's claim: early steps decide composition, middle steps structure, late steps fine detail.

Pure computation on a denoiser ``D(x, sigma, cond)`` (a trained model, or an exact ``reference`` denoiser in the
tests); no files. Three measurements:

frequency_split    per step i, the change of the predicted clean image, ``denoised_i - denoised_{i-1}``, split
                   by radial spatial frequency (2-D FFT power, cycles per pixel) at ``cutoff``: the share of the
                   change's energy that is coarse (low band, |f| <= cutoff) vs fine (high band).
commitment_curve   how much is already decided at step k. Method: take the state x_k of the original run, finish
                   it ``n`` times with a *stochastic* sampler (DDPM ancestral by default) and fresh noise, and
                   compare each finish with the original final image: same class (when a classifier is given) and
                   pixel RMSE. For an exact denoiser and a fine grid the finishes are samples of p(x_0 | x_k), so
                   the share keeping a mixture component equals that component's posterior weight at x_k: ~1/K
                   at pure noise, ~1 near the end (the tests check this against the closed form).
step_consistency   the same initial noise sampled with 10, 25, 50, 100 deterministic steps: RMSE of each result to
                   the result with the most steps, and class agreement with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from diffuscope.checks.errors import UsageError
from diffuscope.core.conditioning import as_cond
from diffuscope.core.defaults import DEFAULT_SAMPLER
from diffuscope.core.schedules import Schedule, SigmaGrid, make_grid
from diffuscope.samplers import get_sampler, make_generators
from diffuscope.samplers.base import MAX_SEED

Classify = Callable[[Tensor], Tensor] | None
DEFAULT_CUTOFF = 0.125  # cycles per pixel: a period of 8 pixels (a quarter of Nyquist)
COMMITMENT_EXAMPLES = 7  # finishes kept per restart point for the pictures


@dataclass(frozen=True)
class PhasesConfig:
    """What the phase measures run (`diffuscope phases`; the functions below and ``phases_report.measure_phases``)."""

    prompt: str | None = None  # None: unconditional sampling (the null condition), so the class is decided too
    steps: int = 50  # steps of the trajectory and the commitment
    n: int = 64  # images (and finishes per restart point)
    seed: int = 0  # image i uses seed + i
    sampler: str = DEFAULT_SAMPLER  # deterministic: the trajectory and the step consistency
    finish_sampler: str = "DDPM"  # stochastic: finishes from a restart point with fresh noise
    points: int = 10  # restart points of the commitment curve
    cutoff: float = DEFAULT_CUTOFF  # the low/high frequency split, in cycles per pixel
    consistency_steps: tuple[int, ...] = (10, 25, 50, 100)  # step counts compared from the same noise
    guidance: float | None = None  # None: DEFAULT_GUIDANCE with a prompt (as `sample`)
    guidance_interval: tuple[float, float] | None = None  # guided only where lo < sigma <= hi (guidance.py)
    classifier: str | Path | None = None  # None: the model's own classifier, where it has one
    batch_size: int = 64
    spacing: str | None = None
    grid: SigmaGrid | None = None  # a grid of ``steps`` steps (e.g. a tuned one) for trajectory and commitment


@dataclass(frozen=True)
class Trajectory:
    """One sampler run, batch-first inside each step: ``x[i]`` is the state at ``sigmas[i]`` before step i and
    ``denoised[i]`` the model's predicted clean image there (i = 0..steps-1); ``final`` is the result."""

    sigmas: Tensor  # [steps + 1], float64, last = 0
    x: Tensor  # [steps, B, C, H, W] (float32, CPU)
    denoised: Tensor  # [steps, B, C, H, W]
    final: Tensor  # [B, C, H, W]
    sampler: str

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    def select(self, index) -> Trajectory:
        """The trajectories of some images of the batch (``index`` into the batch dimension)."""
        return Trajectory(self.sigmas, self.x[:, index], self.denoised[:, index], self.final[index], self.sampler)


def sample_trajectory(denoiser: Callable, x: Tensor, sigmas: Tensor, *, sampler: str = DEFAULT_SAMPLER, cond=None,
                      generator=None) -> Trajectory:
    """Run a sampler from ``x`` (sigma space, at ``sigmas[0]``) and record every step through its callback."""
    spec = get_sampler(sampler)
    xs, ds = [], []

    def record(info) -> None:
        xs.append(info.x.detach().float().cpu())
        ds.append(info.denoised.detach().float().cpu())

    with torch.no_grad():
        final = spec.fn(denoiser, x, sigmas, cond=cond, generator=generator, callback=record)
    return Trajectory(sigmas.detach().double().cpu(), torch.stack(xs), torch.stack(ds), final.detach().float().cpu(),
                      spec.name)


def _decode_cpu(decode: Callable[[Tensor], Tensor], x: Tensor, device) -> Tensor:
    with torch.no_grad():
        return decode(x.to(device)).float().cpu()


def rmse(a: Tensor, b: Tensor) -> Tensor:
    """Per-image root-mean-square pixel distance [B]."""
    return (a.double() - b.double()).flatten(1).pow(2).mean(1).sqrt()


# --- frequency split -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrequencySplit:
    """Per step i = 1..steps-1: energy (mean over images of the summed squared change) of
    ``denoised_i - denoised_{i-1}`` below and above ``cutoff`` cycles per pixel."""

    steps: list[int]
    sigmas: list[float]  # sigma_i of each step
    low: list[float]
    high: list[float]
    cutoff: float
    white_share: float = float("nan")  # the low share a white-noise change would have: share of FFT bins <= cutoff

    @property
    def low_share(self) -> list[float]:
        return [lo / (lo + hi) if lo + hi > 0 else float("nan") for lo, hi in zip(self.low, self.high)]

    def band_summary(self, parts: int = 3) -> list[dict]:
        """The steps cut into ``parts`` equal runs (early, middle, late): each run's share of all the change and
        its energy-weighted low-frequency share."""
        total = sum(self.low) + sum(self.high)
        out = []
        n = len(self.steps)
        for p in range(parts):
            a, b = round(p * n / parts), round((p + 1) * n / parts)
            lo, hi = sum(self.low[a:b]), sum(self.high[a:b])
            out.append({"first": self.steps[a] if a < n else None, "last": self.steps[b - 1] if b > a else None,
                        "change_share": (lo + hi) / total if total > 0 else float("nan"),
                        "low_share": lo / (lo + hi) if lo + hi > 0 else float("nan")})
        return out


def radial_frequency(h: int, w: int) -> Tensor:
    """|f| in cycles per pixel for each bin of an h x w 2-D FFT (0 .. sqrt(0.5))."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64)
    fx = torch.fft.fftfreq(w, dtype=torch.float64)
    return (fy[:, None] ** 2 + fx[None, :] ** 2).sqrt()


def band_energy(images: Tensor, cutoff: float = DEFAULT_CUTOFF) -> tuple[Tensor, Tensor]:
    """(low, high) energy of [..., H, W] images, summed over the last two dims; low + high = sum of squares
    (Parseval), low = the bins with |f| <= cutoff."""
    h, w = images.shape[-2:]
    power = torch.fft.fft2(images.double()).abs().pow(2) / (h * w)
    mask = radial_frequency(h, w) <= cutoff
    return power[..., mask].sum(-1), power[..., ~mask].sum(-1)


def frequency_split(denoised: Tensor, cutoff: float = DEFAULT_CUTOFF, sigmas: Sequence[float] | None = None
                    ) -> FrequencySplit:
    """The coarse/fine split of the per-step change of the predicted clean image.

    ``denoised`` is [steps, B, C, H, W] (``Trajectory.denoised``); energies are summed over channels and pixels
    and averaged over the B images."""
    if denoised.ndim != 5 or len(denoised) < 2:
        raise ValueError(f"denoised must be [steps >= 2, B, C, H, W], got {tuple(denoised.shape)}")
    if not 0 < cutoff < 0.5**0.5:
        raise UsageError(f"cutoff must be in (0, 0.707) cycles per pixel, got {cutoff}")
    low, high = band_energy(denoised[1:] - denoised[:-1], cutoff)  # [steps-1, B, C]
    low, high = low.sum(-1).mean(-1), high.sum(-1).mean(-1)
    steps = list(range(1, len(denoised)))
    sig = [float(sigmas[i]) for i in steps] if sigmas is not None else [float("nan")] * len(steps)
    white = float((radial_frequency(*denoised.shape[-2:]) <= cutoff).double().mean())
    return FrequencySplit(steps, sig, low.tolist(), high.tolist(), float(cutoff), white)


# --- commitment --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Commitment:
    """For each measured step k: the share of finishes from x_k that keep the original's class (None without a
    classifier) and their mean pixel RMSE to the original final image."""

    steps: int
    points: list[int]
    sigmas: list[float]
    keep: list[float] | None
    rmse: list[float]
    n: int  # finishes per original and point
    originals: int
    finish_sampler: str
    original: Tensor  # [B, C, H, W] the original final images
    examples: Tensor  # [points, m, C, H, W] the first finishes of original 0 at each point
    method: str = "restart from x_k with fresh noise, finish with a stochastic sampler"


def commitment_points(steps: int, points: int) -> list[int]:
    """``points`` step indices evenly spaced over 0..steps-1, first and last included (fewer if steps is small)."""
    if points < 2:
        raise UsageError(f"need at least 2 commitment points, got {points}")
    if points >= steps:
        return list(range(steps))
    return sorted({round(j * (steps - 1) / (points - 1)) for j in range(points)})


def _finish_seed(seed: int, j: int, count: int) -> int:
    return (seed + 1_000_003 * (j + 1)) % (MAX_SEED - count)


def commitment_curve(denoiser: Callable, sigmas: Tensor, x_start: Tensor | None = None,
                     config: PhasesConfig | None = None, *, cond=None, classify: Classify = None,
                     trajectory: Trajectory | None = None, decode: Callable[[Tensor], Tensor] | None = None
                     ) -> Commitment:
    """Restart the run at each of ``config.points`` steps and finish it ``config.n`` times with fresh noise.

    The original run goes from ``x_start`` ([B, C, H, W] in sigma space) over ``sigmas`` with ``config.sampler``
    (or is given as ``trajectory``). Finishes use ``config.finish_sampler`` (it must be stochastic) on
    ``sigmas[k:]``, finish j of point p drawing from its own generator (from ``config.seed``), ``config.batch_size``
    at a time. ``classify(images) -> labels`` decides "same class". ``decode`` maps samples to pixel images (a
    latent model) before they are compared."""
    config = config or PhasesConfig()
    n, seed, batch_size = config.n, config.seed, config.batch_size
    if n < 2:
        raise UsageError(f"need at least 2 finishes per point (--n), got {n}")
    spec = get_sampler(config.finish_sampler)
    if spec.deterministic:
        raise UsageError(f"the finishing sampler must be stochastic (fresh noise must matter); {spec.name} is not")
    if trajectory is None:
        if x_start is None:
            raise ValueError("give x_start or trajectory")
        trajectory = sample_trajectory(denoiser, x_start, sigmas, sampler=config.sampler, cond=cond)
    device = x_start.device if x_start is not None else torch.device("cpu")
    dtype = x_start.dtype if x_start is not None else torch.float32
    sig = trajectory.sigmas.to(device)
    b = trajectory.final.shape[0]
    decode = decode or (lambda v: v)
    original = _decode_cpu(decode, trajectory.final, device)
    cond = as_cond(cond)
    cond_rep = None if cond is None else cond.to(device).expand(b).repeat_interleave(n)
    orig_cls = None if classify is None else torch.as_tensor(classify(original)).cpu().long().repeat_interleave(n)
    ks = commitment_points(trajectory.steps, config.points)
    keep, dist, shown = [], [], []
    for j, k in enumerate(ks):
        start = trajectory.x[k].to(device, dtype).repeat_interleave(n, 0)
        gens = make_generators(_finish_seed(seed, j, len(start)), len(start))
        outs = []
        with torch.no_grad():
            for a in range(0, len(start), batch_size):
                c = None if cond_rep is None else cond_rep[a : a + batch_size]
                outs.append(_decode_cpu(decode, spec.fn(denoiser, start[a : a + batch_size], sig[k:], cond=c,
                                                        generator=gens[a : a + batch_size]), device))
        finishes = torch.cat(outs)
        shown.append(finishes[: min(n, COMMITMENT_EXAMPLES)])
        dist.append(float(rmse(finishes, original.repeat_interleave(n, 0)).mean()))
        if classify is not None:
            same = torch.as_tensor(classify(finishes)).cpu().long() == orig_cls
            keep.append(float(same.float().mean()))
    return Commitment(trajectory.steps, ks, [float(trajectory.sigmas[k]) for k in ks],
                      keep if classify is not None else None, dist, n, b, spec.name, original, torch.stack(shown))


# --- step consistency -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Consistency:
    """Same noise, different step counts: mean RMSE of each result to the ``reference_steps`` result, and the
    share of images whose class agrees with it (None without a classifier)."""

    steps: list[int]
    reference_steps: int
    rmse: list[float]
    agreement: list[float] | None
    sampler: str
    images: Tensor  # [len(steps), B, C, H, W]


def step_consistency(denoiser: Callable, schedule: Schedule, noise: Tensor, config: PhasesConfig | None = None, *,
                     cond=None, classify: Classify = None,
                     decode: Callable[[Tensor], Tensor] | None = None) -> Consistency:
    """Sample the unit ``noise`` ([B, C, H, W]; scaled by each grid's first sigma) with every step count of
    ``config.consistency_steps`` (``config.sampler`` on grids of ``config.spacing``, ``config.batch_size`` at a
    time)."""
    config = config or PhasesConfig()
    spacing, batch_size = config.spacing, config.batch_size
    spec = get_sampler(config.sampler)
    if not spec.deterministic:
        raise UsageError(f"step consistency needs a deterministic sampler; {spec.name} is stochastic")
    steps = [int(s) for s in config.consistency_steps]
    if len(steps) < 2 or len(set(steps)) != len(steps) or min(steps) < 1:
        raise UsageError(f"need at least 2 different positive step counts, got {steps}")
    steps = sorted(steps)
    decode = decode or (lambda v: v)
    cond = as_cond(cond)
    cond_all = None if cond is None else cond.to(noise.device).expand(len(noise))
    results = []
    for s in steps:
        sigmas = make_grid(schedule, s, spacing).sigmas.to(noise.device)
        outs = []
        with torch.no_grad():
            for a in range(0, len(noise), batch_size):
                c = None if cond_all is None else cond_all[a : a + batch_size]
                x = noise[a : a + batch_size] * float(sigmas[0])
                outs.append(_decode_cpu(decode, spec.fn(denoiser, x, sigmas, cond=c), noise.device))
        results.append(torch.cat(outs))
    ref = results[-1]
    dist = [float(rmse(r, ref).mean()) for r in results]
    agreement = None
    if classify is not None:
        ref_cls = torch.as_tensor(classify(ref)).cpu().long()
        agreement = [float((torch.as_tensor(classify(r)).cpu().long() == ref_cls).float().mean()) for r in results]
    return Consistency(steps, steps[-1], dist, agreement, spec.name, torch.stack(results))


# --- plain-language summary --------------------------------------------------------------------------------------


def _pct(v: float) -> str:
    return "n/a" if v != v else f"{100 * v:.0f}%"


def summary_text(freq: FrequencySplit | None = None, commit: Commitment | None = None,
                 consist: Consistency | None = None, *, notes: Sequence[str] = ()) -> str:
    """A short Markdown summary of the measurements, with the numbers."""
    lines = ["# Phases of sampling: what gets decided when", ""]
    lines += [f"- {note}" for note in notes]
    if notes:
        lines.append("")
    if freq is not None:
        total_steps = freq.steps[-1] + 1
        lines += ["## Coarse vs fine change per step", "",
                  f"Change of the predicted clean image between consecutive steps, split at {freq.cutoff:g} cycles "
                  f"per pixel (a period of {1 / freq.cutoff:.0f} pixels): below = coarse, above = fine. "
                  f"For scale: a change of pure white noise would be {_pct(freq.white_share)} coarse.", ""]
        for name, part in zip(("early", "middle", "late"), freq.band_summary(3)):
            if part["first"] is None:
                continue
            coarse = (f"{_pct(part['low_share'])} of it coarse" if part["low_share"] == part["low_share"]
                      else "no change at all")
            lines.append(f"- {name} steps ({part['first']}-{part['last']} of {total_steps}): "
                         f"{_pct(part['change_share'])} of all the change happens here, {coarse}.")
        lines.append("")
    if commit is not None:
        lines += ["## Commitment: how much is decided by step k", "",
                  f"Method: {commit.method} ({commit.finish_sampler}), {commit.n} finishes per step"
                  f"{f' for each of {commit.originals} originals' if commit.originals > 1 else ''}.", ""]
        if commit.keep is not None:
            first = next((k for k, v in zip(commit.points, commit.keep) if v >= 0.9), None)
            if first is None:
                lines.append(f"- Even at step {commit.points[-1]} of {commit.steps} only {_pct(commit.keep[-1])} of "
                             "finishes keep the class.")
            elif first == commit.points[0]:
                lines.append(f"- Already at step {first} of {commit.steps} (pure noise), {_pct(commit.keep[0])} of "
                             "finishes keep the class: it is fixed from the start.")
            else:
                lines.append(f"- By step {first} of {commit.steps}, {_pct(commit.keep[commit.points.index(first)])}"
                             f" of finishes keep the class; at step {commit.points[0]} (pure noise), "
                             f"{_pct(commit.keep[0])} do.")
        r0 = commit.rmse[0]
        half = next((k for k, v in zip(commit.points, commit.rmse) if v <= r0 / 2), None)
        lines.append(f"- Pixel RMSE of the finishes to the original: {r0:.3f} from step 0, "
                     f"{commit.rmse[-1]:.3f} from step {commit.points[-1]}"
                     + (f"; it halves by step {half}." if half is not None else "."))
        lines.append("")
    if consist is not None:
        lines += ["## Consistency across step counts", "",
                  f"Same initial noise, {consist.sampler}; distance to the {consist.reference_steps}-step result:", ""]
        for i, (s, d) in enumerate(zip(consist.steps, consist.rmse)):
            agree = f", class agrees for {_pct(consist.agreement[i])}" if consist.agreement is not None else ""
            lines.append(f"- {s} steps: RMSE {d:.3f}{agree}")
        lines.append("")
    return "\n".join(lines)

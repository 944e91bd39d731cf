"""The phase measurements on exact Gaussian-mixture denoisers, where theory says what they must show.

For an exact denoiser the finishes from x_k are (up to the sampler's discretisation) samples of p(x_0 | x_k), so
the share of finishes that keep the original's mixture component equals that component's posterior weight at
x_k: 1/2 for two equal components at pure noise, 1 near the end. Components whose means differ by a smooth pattern
make the early change of the predicted clean image coarse; a checkerboard difference makes it fine.
"""

from __future__ import annotations

import math

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.core.reference import GaussianMixtureDenoiser
from diffuscope.core.schedules import EDMSchedule, make_grid
from diffuscope.lesson.phases import (
    PhasesConfig,
    band_energy,
    commitment_curve,
    commitment_points,
    frequency_split,
    sample_trajectory,
    step_consistency,
    summary_text,
)
from diffuscope.samplers import initial_noise, make_generators, randn

H = 8
SCHEDULE = EDMSchedule(0.002, 80.0)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small tensor ops run faster on one thread


def _blob(cy: float, cx: float, width: float = 2.0) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(H, dtype=torch.float64), indexing="ij")
    return torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width**2))


def _smooth_pair() -> torch.Tensor:
    """Two components whose means differ by a smooth (low-frequency) pattern; [2, 1, H, H]."""
    d = _blob(2, 2) - _blob(5, 5)
    return torch.stack([d, -d])[:, None].float()


def _checker_pair() -> torch.Tensor:
    """Two components whose means differ by a checkerboard (the highest frequency); same norm as the smooth pair."""
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(H), indexing="ij")
    checker = ((yy + xx) % 2 * 2 - 1).double()
    checker = checker * (_blob(2, 2) - _blob(5, 5)).norm() / checker.norm()
    return torch.stack([checker, -checker])[:, None].float()


def _component(means: torch.Tensor):
    """Oracle classifier: index of the nearest component mean."""
    flat = means.flatten(1).double()
    return lambda images: torch.cdist(images.flatten(1).double(), flat).argmin(1)


def _start(b: int, steps: int, seed: int = 0):
    sigmas = make_grid(SCHEDULE, steps).sigmas
    return initial_noise((b, 1, H, H), make_generators(seed, b), float(sigmas[0])), sigmas


# --- commitment -----------------------------------------------------------------------------------------------------


def test_commitment_unconditional_two_components_follows_the_posterior():
    means = _smooth_pair()
    den = GaussianMixtureDenoiser(means, 0.15)
    classify = _component(means)
    x, sigmas = _start(4, 20)
    traj = sample_trajectory(den, x, sigmas, sampler="DPM++ 2M")
    c = commitment_curve(den, sigmas, x, PhasesConfig(n=40, points=6, seed=1), classify=classify, trajectory=traj)
    assert c.points[0] == 0 and c.points[-1] == 19 and len(c.points) == 6
    # pure noise: a coin flip between the components; the last step: everything decided
    assert 0.35 <= c.keep[0] <= 0.65
    assert c.keep[-1] >= 0.98
    assert c.rmse[-1] < 0.1 * c.rmse[0]
    # monotone trend (up to sampling noise of 160 finishes per point)
    assert all(b >= a - 0.1 for a, b in zip(c.keep, c.keep[1:]))
    # and the theory: keep share = mean posterior weight of the original's component at x_k
    orig = classify(traj.final)
    for k, keep in zip(c.points, c.keep):
        r = den.log_responsibilities(traj.x[k], torch.full((4,), float(sigmas[k]))).exp()
        theory = float(r[torch.arange(4), orig].mean())
        assert abs(keep - theory) < 0.15, (k, keep, theory)


def test_commitment_class_conditional_stays_in_class_and_splits_within_it():
    blobs = [_blob(2, 2) - _blob(5, 5), _blob(2, 5) - _blob(5, 2)]
    means = torch.stack([blobs[0], -blobs[0], blobs[1], -blobs[1]])[:, None].float()
    den = GaussianMixtureDenoiser(means, 0.15, classes=torch.tensor([0, 0, 1, 1]))
    component = _component(means)
    x, sigmas = _start(3, 16, seed=5)
    cond = torch.zeros(3, dtype=torch.long)
    c = commitment_curve(den, sigmas, x, PhasesConfig(n=40, points=4, seed=2), cond=cond, classify=component)
    assert set(component(c.original).tolist()) <= {0, 1}
    assert 0.3 <= c.keep[0] <= 0.7  # two components left in the prompted class
    assert c.keep[-1] >= 0.98
    # the class itself is never in doubt: classify by class instead of component
    by_class = commitment_curve(den, sigmas, x, PhasesConfig(n=20, points=3, seed=3), cond=cond,
                                classify=lambda im: component(im) // 2)
    assert by_class.keep == [1.0, 1.0, 1.0]


def test_commitment_rejects_bad_input():
    den = GaussianMixtureDenoiser(_smooth_pair(), 0.15)
    x, sigmas = _start(1, 5)
    with pytest.raises(UsageError, match="at least 2 finishes"):
        commitment_curve(den, sigmas, x, PhasesConfig(n=1))
    with pytest.raises(UsageError, match="stochastic"):
        commitment_curve(den, sigmas, x, PhasesConfig(n=4, finish_sampler="Euler"))
    assert commitment_points(50, 10) == [0, 5, 11, 16, 22, 27, 33, 38, 44, 49]
    assert commitment_points(3, 10) == [0, 1, 2]


def test_commitment_without_classifier_reports_pixels_only():
    den = GaussianMixtureDenoiser(_smooth_pair(), 0.15)
    x, sigmas = _start(1, 6)
    c = commitment_curve(den, sigmas, x, PhasesConfig(n=8, points=3))
    assert c.keep is None and len(c.rmse) == 3 and c.rmse[-1] < c.rmse[0]
    text = summary_text(commit=c)
    assert "keep the class" not in text and "Pixel RMSE" in text


# --- frequency split ------------------------------------------------------------------------------------------------


def _thirds(means: torch.Tensor, steps: int = 30):
    den = GaussianMixtureDenoiser(means, 0.15)
    x, sigmas = _start(16, steps)
    traj = sample_trajectory(den, x, sigmas, sampler="Euler")
    freq = frequency_split(traj.denoised, 0.125, sigmas.tolist())
    return freq, freq.band_summary(3)


def test_frequency_split_smooth_components_change_coarsely_first_then_finely():
    freq, (early, middle, late) = _thirds(_smooth_pair())
    white = 5 / 64  # share of FFT bins with |f| <= 1/8 on an 8x8 grid: what white-noise change would give
    assert freq.white_share == white
    assert early["low_share"] > 0.8 and middle["low_share"] > 0.6
    assert late["low_share"] < 2 * white  # the last steps add the within-component (white) detail
    assert len(freq.steps) == 29 and freq.steps[0] == 1


def test_frequency_split_checkerboard_components_change_finely_first():
    """The control: the same mixture with a high-frequency difference puts the early change in the fine band,
    so the smooth case above measures the data, not the method."""
    _, (early, _, _) = _thirds(_checker_pair())
    assert early["low_share"] < 0.1


def test_band_energy_is_parseval_and_respects_the_cutoff():
    img = torch.randn(3, 1, H, H, dtype=torch.float64)
    low, high = band_energy(img, 0.125)
    assert torch.allclose(low + high, img.pow(2).sum((-2, -1)))
    const = torch.full((1, 1, H, H), 0.5, dtype=torch.float64)  # all energy at f = 0
    low, high = band_energy(const, 0.125)
    assert float(high.sum()) < 1e-20 and math.isclose(float(low.sum()), 0.25 * H * H)
    with pytest.raises(UsageError):
        frequency_split(torch.zeros(3, 1, 1, H, H), cutoff=0.9)


# --- step consistency -----------------------------------------------------------------------------------------------


def test_step_consistency_converges_to_the_most_steps():
    means = _smooth_pair()
    den = GaussianMixtureDenoiser(means, 0.3)
    noise = randn((8, 1, H, H), make_generators(0, 8))
    c = step_consistency(den, SCHEDULE, noise, PhasesConfig(consistency_steps=(25, 5, 10, 50), sampler="Euler"),
                         classify=_component(means))
    assert c.steps == [5, 10, 25, 50] and c.reference_steps == 50 and c.rmse[-1] == 0
    assert c.rmse[0] > c.rmse[1] > c.rmse[2] > 0
    assert c.agreement[-1] == 1.0 and c.agreement[2] >= 0.8
    assert c.images.shape == (4, 8, 1, H, H)
    text = summary_text(consist=c)
    assert "- 5 steps: RMSE" in text and "class agrees" in text
    with pytest.raises(UsageError, match="deterministic"):
        step_consistency(den, SCHEDULE, noise, PhasesConfig(sampler="Euler a"))
    with pytest.raises(UsageError, match="2 different"):
        step_consistency(den, SCHEDULE, noise, PhasesConfig(consistency_steps=(10, 10)))


def test_summary_states_when_the_class_is_decided():
    means = _smooth_pair()
    den = GaussianMixtureDenoiser(means, 0.15)
    x, sigmas = _start(2, 10)
    c = commitment_curve(den, sigmas, x, PhasesConfig(n=16, points=4), classify=_component(means))
    text = summary_text(commit=c, notes=["a note"])
    first = next(k for k, v in zip(c.points, c.keep) if v >= 0.9)
    assert f"By step {first} of 10" in text and "of finishes keep the class" in text and "- a note" in text

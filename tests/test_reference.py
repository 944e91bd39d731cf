import pytest
import torch

from diffuscope.core.reference import EmpiricalDenoiser, GaussianDenoiser, GaussianMixtureDenoiser


def test_gaussian_denoiser_is_the_posterior_mean():
    # Monte Carlo: E[x0 | x] for x0 ~ N(mu, s^2), x = x0 + sigma n, estimated by binning x
    mu, s, sigma = 0.3, 0.7, 1.1
    g = torch.Generator().manual_seed(0)
    x0 = mu + s * torch.randn(400000, generator=g, dtype=torch.float64)
    x = x0 + sigma * torch.randn(400000, generator=g, dtype=torch.float64)
    d = GaussianDenoiser(mu, s)
    sel = (x - 1.0).abs() < 0.02
    expected = float(d(torch.tensor([[1.0]], dtype=torch.float64), sigma))
    assert float(x0[sel].mean()) == pytest.approx(expected, abs=0.02)


def test_gaussian_ode_solution_satisfies_the_ode():
    d = GaussianDenoiser(torch.tensor(0.5, dtype=torch.float64), 0.4)
    x = torch.randn(5, 1, dtype=torch.float64)
    h = 1e-6
    sigma = 2.0
    xs = d.ode_solution(x, 3.0, sigma)
    deriv = (d.ode_solution(x, 3.0, sigma + h) - d.ode_solution(x, 3.0, sigma - h)) / (2 * h)
    assert torch.allclose(deriv, (xs - d(xs, sigma)) / sigma, atol=1e-6)


def test_mixture_of_one_equals_gaussian():
    mu = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    mix = GaussianMixtureDenoiser(mu, 0.6)
    gauss = GaussianDenoiser(mu[0], 0.6)
    x = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    sigma = torch.tensor([0.1, 1.0, 5.0, 40.0], dtype=torch.float64)
    assert torch.allclose(mix(x, sigma), gauss(x, sigma), atol=1e-10)


def test_mixture_conditioning_selects_components():
    means = torch.tensor([[-2.0], [2.0]], dtype=torch.float64)
    mix = GaussianMixtureDenoiser(means, 0.1)
    x = torch.zeros(2, 1, dtype=torch.float64)
    uncond = mix(x, 1.0)
    assert torch.allclose(uncond, torch.zeros_like(uncond), atol=1e-9)  # symmetric
    cond = mix(x, 1.0, torch.tensor([0, 1]))
    assert float(cond[0]) < -1.5 and float(cond[1]) > 1.5
    null = mix(x, 1.0, torch.tensor([2, 2]))  # null class = unconditional
    assert torch.allclose(null, uncond)


def test_empirical_denoiser_recovers_training_points_at_low_noise():
    data = torch.randn(6, 1, 4, 4, dtype=torch.float64)
    d = EmpiricalDenoiser(data)
    x = data + 0.01 * torch.randn_like(data)
    assert torch.allclose(d(x, 0.01), data, atol=1e-6)
    # at very high noise it returns the data mean
    far = d(torch.zeros(1, 1, 4, 4, dtype=torch.float64), 1e4)
    assert torch.allclose(far[0], data.mean(0), atol=1e-4)


def test_mixture_samples_have_the_right_moments():
    means = torch.tensor([[-1.0], [3.0]], dtype=torch.float64)
    mix = GaussianMixtureDenoiser(means, torch.tensor([0.5, 0.2]), weights=torch.tensor([0.25, 0.75]))
    x, k = mix.sample(40000, generator=torch.Generator().manual_seed(0))
    assert float((k == 1).double().mean()) == pytest.approx(0.75, abs=0.01)
    assert float(x[k == 0].std()) == pytest.approx(0.5, abs=0.02)
    assert float(x.mean()) == pytest.approx(0.25 * -1 + 0.75 * 3, abs=0.03)

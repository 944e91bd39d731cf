import math

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


def _mixture_by_hand(x, sigma, means, stds, weights, allowed=None):
    """Tweedie's posterior mean for sum_k w_k N(mu_k, s_k^2 I), written out with Python floats."""
    d = len(x)
    logs = []
    for k, (mu, s, w) in enumerate(zip(means, stds, weights, strict=True)):
        var = s**2 + sigma**2
        sq = sum((a - b) ** 2 for a, b in zip(x, mu, strict=True))
        ok = allowed is None or k in allowed
        logs.append(math.log(w) - 0.5 * sq / var - 0.5 * d * math.log(var) if ok else -math.inf)
    top = max(logs)
    r = [math.exp(v - top) for v in logs]
    r = [v / sum(r) for v in r]
    return [sum(r[k] * (stds[k] ** 2 * x[i] + sigma**2 * means[k][i]) / (stds[k] ** 2 + sigma**2)
                for k in range(len(means))) for i in range(d)]


MEANS = [[-1.0, 0.5], [2.0, 1.0], [0.0, -2.0]]
STDS = [0.3, 0.8, 0.5]
WEIGHTS = [0.2, 0.5, 0.3]


@pytest.mark.parametrize("sigma", [0.1, 0.7, 3.0])
def test_mixture_is_tweedies_posterior_mean_by_hand(sigma):
    mix = GaussianMixtureDenoiser(torch.tensor(MEANS, dtype=torch.float64), torch.tensor(STDS, dtype=torch.float64),
                                  weights=torch.tensor(WEIGHTS), classes=torch.tensor([0, 1, 1]))
    points = [[0.3, -0.4], [1.5, 0.9], [-0.8, 0.2]]  # 1e-6: torch.cdist rounds (matrix form), amplified at sigma 0.1
    x = torch.tensor(points, dtype=torch.float64)
    out = mix(x, sigma)
    for i, p in enumerate(points):
        assert out[i].tolist() == pytest.approx(_mixture_by_hand(p, sigma, MEANS, STDS, WEIGHTS), abs=1e-6)
    only_1 = mix(x, torch.full((3,), sigma, dtype=torch.float64), torch.tensor([1, 1, 1]))
    for i, p in enumerate(points):
        by_hand = _mixture_by_hand(p, sigma, MEANS, STDS, WEIGHTS, allowed={1, 2})
        assert only_1[i].tolist() == pytest.approx(by_hand, abs=1e-6)
    from diffuscope.core.conditioning import ClassCond

    labels = torch.tensor([0, 1, 2])  # 2 = the null class: unconditional
    as_cond = mix(x, sigma, ClassCond(labels))
    assert torch.equal(as_cond, mix(x, sigma, labels))
    assert as_cond[0].tolist() == pytest.approx(_mixture_by_hand(points[0], sigma, MEANS, STDS, WEIGHTS, {0}),
                                                abs=1e-6)
    assert torch.allclose(as_cond[2], out[2], atol=1e-15)
    f32 = mix(x.float(), sigma)
    assert f32.dtype == torch.float32 and torch.allclose(f32.double(), out, atol=1e-6)


def test_gaussian_denoiser_and_its_ode_solution_by_hand():
    mu, s = torch.tensor([0.5, -1.0]), 0.4
    d = GaussianDenoiser(mu, s)
    x = torch.tensor([[2.0, 3.0], [-1.0, 0.0]])
    out = d(x, torch.tensor([1.0, 0.5]))
    assert out.dtype == torch.float32
    assert out[0].tolist() == pytest.approx([(0.16 * 2.0 + 1.0 * 0.5) / 1.16, (0.16 * 3.0 - 1.0) / 1.16], abs=1e-6)
    assert out[1].tolist() == pytest.approx([(0.16 * -1.0 + 0.25 * 0.5) / 0.41, (0.0 - 0.25) / 0.41], abs=1e-6)
    end = d.ode_solution(x.double(), 3.0, 2.0)
    scale = math.sqrt(0.16 + 4.0) / math.sqrt(0.16 + 9.0)
    expected = mu.double() + (x.double() - mu.double()) * scale
    assert torch.allclose(end, expected, atol=1e-15, rtol=0) and end.dtype == torch.float64


def test_samples_are_drawn_from_the_generator_in_float64():
    d = GaussianDenoiser(0.3, 0.5)
    x = d.sample(4, (2,), generator=torch.Generator().manual_seed(3))
    noise = torch.randn((4, 2), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert x.dtype == torch.float32 and torch.equal(x, d.mu + 0.5 * noise.float())  # drawn in float64, then cast
    mix = GaussianMixtureDenoiser(torch.tensor([[-1.0], [3.0], [5.0]], dtype=torch.float64),
                                  torch.tensor([0.5, 0.2, 0.1]), classes=torch.tensor([0, 1, 1]))
    x, k = mix.sample(6, generator=torch.Generator().manual_seed(4), cond=1)  # components 1 and 2: class 1
    g = torch.Generator().manual_seed(4)
    probabilities = mix.log_weights.masked_fill(mix.classes != 1, -math.inf).exp()  # 0, 1/3, 1/3
    assert probabilities.tolist() == pytest.approx([0.0, 1 / 3, 1 / 3])
    picked = torch.multinomial(probabilities, 6, replacement=True, generator=g)
    noise = torch.randn((6, 1), generator=g, dtype=torch.float64)
    assert set(picked.tolist()) == {1, 2} and torch.equal(k, torch.ones(6, dtype=torch.long))  # their class
    assert x.dtype == torch.float64
    assert torch.allclose(x, mix.means[picked] + torch.tensor([0.5, 0.2, 0.1], dtype=torch.float64)[picked, None]
                          * noise, atol=1e-15)


def test_empirical_denoiser_keeps_its_labels():
    data = torch.tensor([[[[-1.0]]], [[[1.0]]]], dtype=torch.float64)
    d = EmpiricalDenoiser(data, labels=torch.tensor([0, 1]))
    near_first = torch.full((1, 1, 1, 1), -0.9, dtype=torch.float64)
    assert float(d(near_first, 0.05)) == pytest.approx(-1.0)
    assert float(d(near_first, 0.05, torch.tensor([1]))) == pytest.approx(1.0)  # its class has only the other


def test_reference_arithmetic_is_float64_and_answers_in_the_inputs_dtype():
    """The posterior means are computed in float64 whatever the inputs (python floats, float32 tensors) and
    returned in x's dtype: exact to float64 rounding against the by-hand formulas."""
    g = GaussianDenoiser(torch.tensor(0.3, dtype=torch.float64), 0.5)
    x = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    assert g(x, 1.0).tolist()[0] == pytest.approx([(0.25 * v + 0.3) / 1.25 for v in (1.0, -2.0)], abs=1e-15)
    assert g.ode_solution(x, 2.0, 1.0).tolist()[0] == pytest.approx(
        [0.3 + (v - 0.3) * math.sqrt(1.25 / 4.25) for v in (1.0, -2.0)], abs=1e-15)
    assert g(x.float(), torch.tensor([1.0], dtype=torch.float64)).dtype == torch.float32  # mu, sigma in x's dtype
    assert g.ode_solution(x.float(), 2.0, 1.0).dtype == torch.float32
    per_pixel = GaussianDenoiser(torch.tensor([0.3, -0.1], dtype=torch.float64), 0.5)  # a float64 mean image
    assert per_pixel(x.float(), 1.0).dtype == torch.float32  # mu moved to x's dtype, not x promoted to mu's
    assert per_pixel.ode_solution(x.float(), 2.0, 1.0).dtype == torch.float32
    means = torch.tensor([[-1.0], [3.0], [5.0]], dtype=torch.float64)  # python-float stds and weights
    mix = GaussianMixtureDenoiser(means, [0.5, 0.2, 0.1], weights=[0.2, 0.5, 0.3])
    assert mix.stds.tolist() == [0.5, 0.2, 0.1]  # the python floats exactly (in the means' float64)
    assert mix.log_weights.exp().tolist() == pytest.approx([0.2, 0.5, 0.3], abs=1e-15)
    mix32 = GaussianMixtureDenoiser(means.float(), 0.5)
    assert mix32.sample(3, generator=torch.Generator().manual_seed(0))[0].dtype == torch.float32
    uniform = GaussianMixtureDenoiser(torch.tensor([[-1.0], [1.0], [2.0]], dtype=torch.float64), 0.5)
    assert uniform.log_weights.tolist() == [math.log(1 / 3)] * 3
    x = torch.tensor([[0.4], [1.7]], dtype=torch.float64)
    by_hand = [_mixture_by_hand([p], 3.0, [[-1.0], [1.0], [2.0]], [0.5] * 3, [1 / 3] * 3)[0] for p in (0.4, 1.7)]
    assert uniform(x, 3.0)[:, 0].tolist() == pytest.approx(by_hand, abs=1e-13)


def test_empirical_labels_are_its_own_not_the_row_order():
    data = torch.tensor([[[[-1.0]]], [[[1.0]]]], dtype=torch.float64)
    d = EmpiricalDenoiser(data, labels=torch.tensor([1, 0]))  # the first image is class 1
    assert d.classes.tolist() == [1, 0]
    assert float(d(torch.full((1, 1, 1, 1), -0.9, dtype=torch.float64), 0.05, torch.tensor([1]))) == pytest.approx(-1)

"""Samplers against exact references (reference.GaussianDenoiser / GaussianMixtureDenoiser), parametrised over
SAMPLERS so every sampler gets the edge cases for free. The samplers' option objects (churn, SDE noise, UniPC):
test_sampler_options.py."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.core.reference import GaussianMixtureDenoiser
from diffuscope.core.schedules import ScheduleConfig, logsnr_sigmas, make_grid, make_schedule
from diffuscope.samplers import (
    SAMPLERS,
    CountingDenoiser,
    StepInfo,
    get_sampler,
    initial_noise,
    make_generators,
    noise_like,
    resolve_seed,
    sample_ddim,
    sample_ddpm,
    sample_euler,
    sample_euler_ancestral,
    sample_ipndm,
)
from sampler_helpers import GAUSS, SHAPE, grid, run, start

IDS = list(SAMPLERS)


# --- the table and the lookup ------------------------------------------------------------------------------------


def test_registry_names_and_lookup():
    assert {s.name for s in SAMPLERS.values()} >= {"DDPM", "DDIM", "Euler", "Euler a", "Heun", "DPM++ 2M"}
    for sampler_id, spec in SAMPLERS.items():
        assert spec.id == sampler_id
        for key in (spec.name, spec.id, spec.name.upper(), spec.id.upper(), *spec.aliases):
            assert get_sampler(key) is spec
    assert get_sampler(" euler a ").id == "euler_ancestral"


def test_unknown_sampler_lists_valid_names():
    with pytest.raises(UsageError, match="unknown sampler 'eulr'") as err:
        get_sampler("eulr")
    for spec in SAMPLERS.values():
        assert spec.name in str(err.value) and spec.id in str(err.value)
    for bad in (None, 3):  # not a string: the same one-line error, not an AttributeError
        with pytest.raises(UsageError, match="unknown sampler"):
            get_sampler(bad)


# --- seeds and noise -----------------------------------------------------------------------------------------


def test_seeds():
    assert resolve_seed(7) == 7
    picked = resolve_seed(-1)
    assert isinstance(picked, int) and 0 <= picked < 2**32
    for bad in (-2, 1.5, "3", True, 2**40):
        with pytest.raises(UsageError):
            resolve_seed(bad)
    assert resolve_seed(2**32 - 1) == 2**32 - 1  # the largest seed is valid
    with pytest.raises(UsageError, match=r"^seed must be -1 \(random\) or an integer in 0\.\.4294967295, got 42949"):
        resolve_seed(2**32)
    with pytest.raises(UsageError, match=r"resolve_seed.*got -1$"):
        make_generators(-1, 2)
    a, b = make_generators(5, 3), make_generators(5, 3)
    assert [g.initial_seed() for g in a] == [5, 6, 7]
    assert torch.equal(noise_like(torch.zeros(3, 2), a), noise_like(torch.zeros(3, 2), b))


def test_noise_per_image_and_dtype():
    x32 = initial_noise((4, 1, 3, 3), make_generators(3, 4), 2.0)
    x64 = initial_noise((4, 1, 3, 3), make_generators(3, 4), 2.0, torch.float64)
    single = initial_noise((1, 1, 3, 3), make_generators(5, 1), 2.0)
    assert x32.dtype == torch.float32 and x64.dtype == torch.float64
    assert torch.equal(x64.float(), x32) and torch.equal(x32[2:3], single)
    with pytest.raises(UsageError, match="3 generators for a batch of 4"):
        noise_like(torch.zeros(4, 2), make_generators(0, 3))
    for dtype in (torch.float32, torch.float64):  # in x's dtype, the same numbers either way
        noise = noise_like(torch.zeros(4, 1, 3, 3, dtype=dtype), make_generators(3, 4))
        assert noise.dtype == dtype and torch.equal(noise.float(), x32 / 2.0)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # drawn in float32 whatever torch's default: the same images
    try:
        assert torch.equal(initial_noise((4, 1, 3, 3), make_generators(3, 4), 2.0), x32)
        assert torch.equal(noise_like(torch.zeros(4, 1, 3, 3), make_generators(3, 4)), x32 / 2.0)
    finally:
        torch.set_default_dtype(before)


def test_to_d_and_euler_step_are_the_pf_ode_formulas():
    """d = (x - D) / sigma (Karras et al. 2022, Eq. 3); an Euler step x + (sigma_next - sigma) d."""
    from diffuscope.samplers import euler_step, to_d

    x, denoised = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    torch.testing.assert_close(to_d(x, 2.5, denoised), (x - denoised) / 2.5, rtol=1e-15, atol=0)
    torch.testing.assert_close(euler_step(x, denoised, 2.5, 0.7), x + (0.7 - 2.5) * (x - denoised) / 2.5)


def test_counting_denoiser_passes_everything_through():
    means = torch.stack([torch.full((1, 2, 2), -2.0), torch.full((1, 2, 2), 2.0)])
    mixture = GaussianMixtureDenoiser(means, 0.1)
    counter = CountingDenoiser(mixture)
    x, sigma = torch.zeros(3, 1, 2, 2), torch.full((3,), 1.0)
    cond = torch.tensor([0, 1, 0])
    assert torch.equal(counter(x, sigma, cond), mixture(x, sigma, cond))
    assert not torch.equal(counter(x, sigma, cond), counter(x, sigma, None))  # cond matters here
    assert counter.nfe == 3 and counter.batch_sizes == [3, 3, 3]
    counter.reset()
    assert counter.nfe == 0 and counter.batch_sizes == []


def test_step_info_is_frozen():
    info = StepInfo(0, 1.0, 0.5, torch.zeros(1), torch.zeros(1), 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.i = 1


# --- edge cases for every sampler ----------------------------------------------------------------------------


@pytest.mark.parametrize("sampler_id", IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_kept_and_input_untouched(sampler_id, dtype):
    sigmas = grid(6)
    x = start(sigmas, dtype=dtype)
    before = x.clone()
    out = run(sampler_id, x, sigmas)
    assert out.shape == x.shape and out.dtype == dtype
    assert torch.isfinite(out).all()
    assert torch.equal(x, before)


@pytest.mark.parametrize("sampler_id", IDS)
def test_one_step_and_final_sigma_zero(sampler_id):
    """Every sampler's step to sigma = 0 lands on the denoised value (one step = one denoiser call)."""
    sigmas = torch.tensor([10.0, 0.0], dtype=torch.float64)
    x = start(sigmas, dtype=torch.float64)
    counter = CountingDenoiser(GAUSS)
    out = SAMPLERS[sampler_id].fn(counter, x, sigmas, generator=make_generators(0, 4))
    torch.testing.assert_close(out, GAUSS(x, 10.0))
    assert counter.nfe == 1


@pytest.mark.parametrize("sampler_id", IDS)
def test_final_output_is_last_denoised_and_callback(sampler_id):
    sigmas, seen = grid(7), []
    out = run(sampler_id, start(sigmas), sigmas, callback=seen.append)
    assert [s.i for s in seen] == list(range(7)) and all(s.steps == 7 for s in seen)
    assert [s.sigma for s in seen] == sigmas[:-1].tolist()
    assert [s.sigma_next for s in seen] == sigmas[1:].tolist()
    assert all(isinstance(s, StepInfo) and s.x.shape == s.denoised.shape == SHAPE for s in seen)
    torch.testing.assert_close(out, seen[-1].denoised)


@pytest.mark.parametrize("sampler_id", IDS)
def test_batch_of_one_and_per_image_generators(sampler_id):
    """Image i of a batch uses generator seed + i: it does not change with the batch size."""
    sigmas = grid(5)
    batch = run(sampler_id, start(sigmas, seed=10), sigmas, seed=20)
    x_one = initial_noise((1, 1, 4, 4), make_generators(12, 1), sigmas[0])
    one = run(sampler_id, x_one, sigmas, seed=22)
    assert one.shape == (1, 1, 4, 4)
    torch.testing.assert_close(one[0], batch[2], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sampler_id", IDS)
def test_same_seed_same_output(sampler_id):
    sigmas = grid(5)
    x = start(sigmas)
    assert torch.equal(run(sampler_id, x, sigmas, seed=3), run(sampler_id, x, sigmas, seed=3))
    differs = not torch.equal(run(sampler_id, x, sigmas, seed=3), run(sampler_id, x, sigmas, seed=4))
    assert differs == (not SAMPLERS[sampler_id].deterministic)


@pytest.mark.parametrize("sampler_id", IDS)
def test_measured_nfe_matches_spec(sampler_id):
    spec = SAMPLERS[sampler_id]
    for steps in (1, 2, 3, 5, 10):
        counter = CountingDenoiser(GAUSS)
        sigmas = grid(steps)
        spec.fn(counter, start(sigmas), sigmas, generator=make_generators(0, 4))
        assert counter.nfe == spec.nfe(steps), (steps, counter.nfe)
        assert set(counter.batch_sizes) == {4}


@pytest.mark.parametrize("sampler_id", IDS)
def test_bad_sigmas_rejected(sampler_id):
    fn, x = SAMPLERS[sampler_id].fn, torch.zeros(SHAPE)
    bad = [
        torch.tensor([5.0, 1.0], dtype=torch.float64),  # last not 0
        torch.tensor([1.0, 5.0, 0.0], dtype=torch.float64),  # not decreasing
        torch.tensor([5.0, 5.0, 0.0], dtype=torch.float64),  # repeated
        torch.tensor([0.0], dtype=torch.float64),  # too short
        torch.ones(2, 2, dtype=torch.float64),  # not 1-D
    ]
    for sigmas in bad:
        with pytest.raises(ValueError):
            fn(GAUSS, x, sigmas)
    with pytest.raises(TypeError, match=r"^sigmas must be a tensor, got list$"):
        fn(GAUSS, x, [5.0, 0.0])
    with pytest.raises(TypeError, match=r"^x must be a floating-point tensor, got torch\.int64$"):
        fn(GAUSS, torch.zeros(SHAPE, dtype=torch.int64), grid(2))


# --- exact references ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler_id", [k for k, s in SAMPLERS.items() if s.deterministic])
def test_deterministic_samplers_converge_to_ode_solution(sampler_id):
    errors = []
    for steps in (8, 32, 128):
        sigmas = grid(steps)
        x = start(sigmas, dtype=torch.float64)
        exact = GAUSS.ode_solution(x, float(sigmas[0]), 0.0)
        errors.append(float((run(sampler_id, x, sigmas) - exact).abs().max()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.03


# (sampler, options, step counts, expected ratio range when the step count doubles). The error is measured at the
# last nonzero sigma of a log-SNR grid from 10 to 0.05 (the final step to 0 adds an error that does not shrink).
ORDER_CASES = [
    ("euler", {}, (32, 64), (1.8, 2.2)),
    ("ddim", {}, (32, 64), (1.8, 2.2)),
    ("heun", {}, (32, 64), (3.6, 4.4)),
    ("dpmpp_2m", {}, (64, 128), (3.6, 4.4)),
    ("dpmpp_2m_sde", {"eta": 0.0}, (64, 128), (3.6, 4.4)),
    # DPM++ 3M as published is second order (see dpmpp_3m.py); doubling its D2 term makes it third order
    ("dpmpp_3m_sde", {"eta": 0.0}, (64, 128), (3.6, 4.6)),
    ("dpmpp_3m_sde", {"eta": 0.0, "d2_scale": 2.0}, (16, 32), (12.0, 40.0)),
    ("uni_pc", {}, (64, 128), (7.0, 9.0)),  # UniP-2 (the default) + UniC: third order
    ("uni_pc", {"order": 3}, (64, 128), (10.0, 18.0)),  # UniP-3 + UniC: fourth order
    ("uni_pc", {"variant": "bh1"}, (64, 128), (7.0, 9.0)),
    ("ipndm", {}, (64, 128), (3.6, 4.4)),  # constant-step coefficients on uneven steps: second order
    ("ipndm_v", {}, (32, 64), (7.0, 14.0)),  # variable-step Adams-Bashforth-4, Euler start: about third order here
    ("ipndm_v", {"max_order": 2}, (64, 128), (3.6, 4.4)),
]


@pytest.mark.parametrize(("sampler_id", "opts", "steps", "ratio"), ORDER_CASES)
def test_observed_order(sampler_id, opts, steps, ratio):
    x = start(grid(1), dtype=torch.float64) / 8  # sigma 10 start
    exact = GAUSS.ode_solution(x, 10.0, 0.05)
    errors = []
    for n in steps:
        sigmas = torch.cat([logsnr_sigmas(n + 1, 0.05, 10.0), torch.zeros(1, dtype=torch.float64)])
        seen = []
        SAMPLERS[sampler_id].fn(GAUSS, x, sigmas, callback=seen.append, **SAMPLERS[sampler_id].keywords(opts))
        errors.append(float((seen[-1].x - exact).abs().max()))
    assert ratio[0] < errors[0] / errors[1] < ratio[1], errors


def test_spec_orders_match_measurements():
    measured = {case[0]: case[3] for case in ORDER_CASES if not case[1] or case[1] == {"eta": 0.0}}
    for sampler_id, (low, high) in measured.items():
        assert low < 2 ** SAMPLERS[sampler_id].order < high, sampler_id


def test_ddim_eta0_equals_euler_and_ddpm_equals_euler_ancestral():
    sigmas = grid(12)
    x = start(sigmas)
    torch.testing.assert_close(sample_ddim(GAUSS, x, sigmas), sample_euler(GAUSS, x, sigmas), rtol=1e-5, atol=1e-5)
    a = sample_ddpm(GAUSS, x, sigmas, generator=make_generators(4, 4))
    b = sample_euler_ancestral(GAUSS, x, sigmas, generator=make_generators(4, 4))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    c = sample_ddim(GAUSS, x, sigmas, generator=make_generators(4, 4), eta=1.0)
    torch.testing.assert_close(a, c)


def test_ancestral_step_is_ddim_eq_16():
    """sigma_up = DDIM's sigma_t(eta) (Song et al. 2021, Eq. 16) in VP terms, divided by sqrt(alpha_bar_next) to be
    in sigma space; sigma_down^2 + sigma_up^2 = sigma_next^2; capped at sigma_next; eta = 0 or sigma_next = 0:
    no noise."""
    from diffuscope.samplers import ancestral_step

    for sigma, sigma_next, eta in ((2.0, 1.0, 1.0), (5.0, 3.0, 0.5), (0.8, 0.1, 1.0), (1.5, 1.0, 0.3)):
        a, a_next = 1 / (1 + sigma**2), 1 / (1 + sigma_next**2)
        sigma_t = eta * math.sqrt((1 - a_next) / (1 - a)) * math.sqrt(1 - a / a_next)
        down, up = ancestral_step(sigma, sigma_next, eta)
        assert up == pytest.approx(sigma_t / math.sqrt(a_next), rel=1e-12)
        assert down == pytest.approx(math.sqrt(sigma_next**2 - up**2), rel=1e-12)
    assert ancestral_step(2.0, 1.0) == ancestral_step(2.0, 1.0, 1.0)  # eta = 1 (DDPM) by default
    assert ancestral_step(2.0, 1.0, 0.0) == (1.0, 0.0) and ancestral_step(2.0, 0.0, 1.0) == (0.0, 0.0)
    assert ancestral_step(2.0, 1.0, 10.0) == (0.0, 1.0)  # capped: all of sigma_next is fresh noise
    with pytest.raises(UsageError, match=r"eta must be >= 0, got -0\.5"):
        ancestral_step(2.0, 1.0, -0.5)


STOCHASTIC_CASES = [
    ("ddpm", "vp1000"),  # DDPM as it is used: the full 1000-step grid of its training schedule
    ("euler_ancestral", "vp1000"),
    ("dpmpp_2m_sde", "karras50"),
    ("dpmpp_3m_sde", "karras50"),
]


@pytest.mark.parametrize(("sampler_id", "grid_name"), STOCHASTIC_CASES)
def test_stochastic_samplers_sample_the_data_distribution(sampler_id, grid_name):
    """Data N(0.3, 0.5^2): 8192 samples (32 images x 256 pixels); mean and std within 0.02 (~4 standard errors)."""
    if grid_name == "vp1000":
        sigmas = make_grid(make_schedule(ScheduleConfig(kind="linear")), 1000).sigmas
    else:
        sigmas = grid(50)
    gen = torch.Generator().manual_seed(0)
    x = initial_noise((32, 1, 16, 16), gen, sigmas[0])
    out = SAMPLERS[sampler_id].fn(GAUSS, x, sigmas, generator=gen)
    assert abs(float(out.mean()) - 0.3) < 0.02
    assert abs(float(out.std()) - 0.5) < 0.02


@pytest.mark.parametrize("sampler_id", IDS)
def test_mixture_with_cond_picks_the_component(sampler_id):
    means = torch.stack([torch.full((1, 4, 4), -2.0), torch.full((1, 4, 4), 2.0)])
    mixture = GaussianMixtureDenoiser(means, 0.1)
    sigmas = grid(10)
    for label, target in ((0, -2.0), (1, 2.0)):
        cond = torch.full((4,), label, dtype=torch.long)
        out = SAMPLERS[sampler_id].fn(mixture, start(sigmas), sigmas, cond=cond, generator=make_generators(0, 4))
        assert math.isclose(float(out.mean()), target, abs_tol=0.15)
        assert float((out - target).abs().max()) < 0.6


def test_the_default_sampler_is_registered_and_deterministic():
    """`phases` and the demo's reverse strip run the default sampler and need a deterministic one."""
    from diffuscope.core.defaults import DEFAULT_SAMPLER

    assert get_sampler(DEFAULT_SAMPLER).deterministic


def test_ipndm_variable_step_weights_integrate_polynomials_exactly():
    """Variable-step Adams-Bashforth: with k nodes the weights integrate any polynomial of degree < k exactly, and on
    equal steps they are the classical constant-step coefficients times the step."""
    from diffuscope.samplers.ipndm import AB_COEFFICIENTS, variable_step_coefficients

    nodes = [2.0, 3.1, 4.7, 7.9]  # newest first, uneven: sampling runs down in sigma, so the history lies above
    start, end = 2.0, 1.3
    for k in range(1, 5):
        for degree in range(k):
            weights = variable_step_coefficients(nodes[:k], start, end)
            exact = (end ** (degree + 1) - start ** (degree + 1)) / (degree + 1)
            assert sum(w * node**degree for w, node in zip(weights, nodes[:k], strict=True)) == pytest.approx(exact)
        h = -0.5
        equal = [1.0 - j * h for j in range(k)]  # sigma_i, sigma_i - h, ... (h < 0: sigma decreases)
        weights = variable_step_coefficients(equal, 1.0, 1.0 + h)
        assert weights == pytest.approx([h * b for b in AB_COEFFICIENTS[k]])


def test_ipndm_rejects_bad_order():
    sigmas = grid(4)
    for bad in (0, 5, 2.0, True):
        with pytest.raises(UsageError, match="max_order"):
            sample_ipndm(GAUSS, start(sigmas), sigmas, max_order=bad)
    with pytest.raises(UsageError, match=r"^iPNDM max_order must be 1, 2, 3 or 4, got 5$"):
        sample_ipndm(GAUSS, start(sigmas), sigmas, max_order=5)


# --- iPNDM (the default sampler) against an independent implementation ----------------------------------------------


def _ipndm_reference(denoiser, x, sigmas, max_order=4):
    """iPNDM as Zhang & Chen 2023 (DEIS, "iPNDM") and ComfyUI's ``sample_ipndm`` write it: a buffer of past
    derivatives d = (x - D) / sigma and the explicit Adams-Bashforth formulas for equal steps, order 1..4 as the
    buffer fills; the step to sigma = 0 returns D. Returns the final x and the state before every step."""
    buffer, states = [], []  # buffer: past derivatives, oldest first
    for i in range(len(sigmas) - 1):
        t_cur, t_next = float(sigmas[i]), float(sigmas[i + 1])
        states.append(x)
        denoised = denoiser(x, t_cur)
        d_cur = (x - denoised) / t_cur
        order = min(max_order, i + 1)
        if t_next == 0:
            return denoised, states
        if order == 1:
            x = x + (t_next - t_cur) * d_cur
        elif order == 2:
            x = x + (t_next - t_cur) * (3 * d_cur - buffer[-1]) / 2
        elif order == 3:
            x = x + (t_next - t_cur) * (23 * d_cur - 16 * buffer[-1] + 5 * buffer[-2]) / 12
        else:
            x = x + (t_next - t_cur) * (55 * d_cur - 59 * buffer[-1] + 37 * buffer[-2] - 9 * buffer[-3]) / 24
        buffer = [*buffer, d_cur][-(max_order - 1):] if max_order > 1 else []
    return x, states


@pytest.mark.parametrize("max_order", [1, 2, 3, 4])
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 7, 12])
def test_ipndm_matches_an_independent_implementation(max_order, steps):
    """Every state of the run, on the Gaussian and on a two-component mixture (a nonlinear denoiser, so the
    derivatives in the history are not all proportional to each other)."""
    sigmas = grid(steps)
    x = start(sigmas, dtype=torch.float64)
    means = torch.stack([torch.full((1, 4, 4), -1.0), torch.full((1, 4, 4), 1.5)]).double()
    for denoiser in (GAUSS, GaussianMixtureDenoiser(means, 0.3)):
        seen = []
        out = sample_ipndm(denoiser, x, sigmas, max_order=max_order, callback=seen.append)
        expected, states = _ipndm_reference(denoiser, x, sigmas, max_order)
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
        assert len(seen) == len(states) == steps
        for info, state in zip(seen, states, strict=True):
            torch.testing.assert_close(info.x, state, rtol=1e-10, atol=1e-10)



import math

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.core.schedules import (
    EDMSchedule,
    ScheduleConfig,
    add_noise,
    check_sigmas,
    cosine_betas,
    discrete_timesteps,
    forward_chain,
    karras_sigmas,
    logsnr_sigmas,
    make_grid,
    make_schedule,
    q_sample,
    sample_training_sigmas,
    scaled_linear_betas,
    to_vp,
)

VP_KINDS = ["linear", "cosine", "scaled_linear"]


@pytest.mark.parametrize("kind,expected", [("linear", 0.0064), ("scaled_linear", 0.068)])
def test_terminal_values_match_published(kind, expected):
    s = make_schedule(ScheduleConfig(kind=kind))
    assert float(s.alpha_bar[-1].sqrt()) == pytest.approx(expected, abs=6e-4)


def test_linear_sigma_range():
    s = make_schedule(ScheduleConfig(kind="linear"))
    assert s.sigma_min == pytest.approx(math.sqrt(1e-4 / (1 - 1e-4)))
    assert s.sigma_max == pytest.approx(157.4, abs=0.1)


@pytest.mark.parametrize("kind", VP_KINDS)
@pytest.mark.parametrize("zsnr", [False, True])
def test_monotone_and_round_trip(kind, zsnr):
    s = make_schedule(ScheduleConfig(kind=kind, zero_terminal_snr=zsnr))
    t = torch.arange(1000, dtype=torch.float64)
    sig = s.sigma(t)
    assert bool((sig[1:] > sig[:-1]).all())
    assert torch.allclose(s.t_from_sigma(sig), t, atol=1e-6)
    frac = torch.tensor([0.25, 10.5, 437.9, 998.5], dtype=torch.float64)
    assert torch.allclose(s.t_from_sigma(s.sigma(frac)), frac, atol=1e-6)
    assert torch.allclose(s.snr(t), 1 / sig**2)
    assert torch.allclose(s.alpha_bar_at(t), s.alpha_bar)
    # sigmas outside the schedule's range map to its ends
    assert s.t_from_sigma(torch.tensor([1e-5, 1e5], dtype=torch.float64)).tolist() == [0, 999]


def test_zero_terminal_snr_makes_last_step_nearly_pure_noise():
    plain = make_schedule(ScheduleConfig(kind="scaled_linear"))
    z = make_schedule(ScheduleConfig(kind="scaled_linear", zero_terminal_snr=True))
    assert float(z.alpha_bar[-1].sqrt()) < 1e-3 < float(plain.alpha_bar[-1].sqrt())
    # Lin et al. 2024 keep the first alpha_bar unchanged
    assert float(z.alpha_bar[0]) == pytest.approx(float(plain.alpha_bar[0]), rel=1e-9)


def test_unknown_schedule_lists_valid():
    with pytest.raises(UsageError, match="linear, cosine"):
        make_schedule(ScheduleConfig(kind="sigmoid"))


def test_closed_form_and_chain_agree_in_distribution():
    s = make_schedule(ScheduleConfig(kind="linear"))
    x0 = torch.full((20000, 1), 0.8, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    keep = [0, 250, 500, 1000]
    chain = forward_chain(x0, s, keep, generator=g)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    assert torch.equal(chain[0], x0)
    for k in keep[1:]:
        ab = s.alpha_bar_after(k)
        closed = q_sample(x0, ab, noise)
        for sample in (chain[k], closed):
            assert float(sample.mean()) == pytest.approx(math.sqrt(ab) * 0.8, abs=0.03)
            assert float(sample.std()) == pytest.approx(math.sqrt(1 - ab), abs=0.03)


def test_alpha_bar_after_range():
    s = make_schedule(ScheduleConfig(kind="linear"))
    assert s.alpha_bar_after(0) == 1.0
    assert s.alpha_bar_after(1000) == pytest.approx(float(s.alpha_bar[-1]))
    with pytest.raises(UsageError, match=r"0\.\.1000"):
        s.alpha_bar_after(1001)


def test_sigma_space_and_vp_space_agree():
    s = make_schedule(ScheduleConfig(kind="cosine"))
    x0, noise = torch.randn(3, 1, 4, 4, dtype=torch.float64), torch.randn(3, 1, 4, 4, dtype=torch.float64)
    t = torch.tensor([10, 400, 900])
    sigma = s.sigma(t)
    x_sigma = x0 + sigma.reshape(-1, 1, 1, 1) * noise
    x_vp = torch.stack([q_sample(x0[i : i + 1], s.alpha_bar[t[i]], noise[i : i + 1])[0] for i in range(3)])
    assert torch.allclose(to_vp(x_sigma, sigma), x_vp, atol=1e-12)


def test_timestep_spacings_match_lin_et_al():
    assert discrete_timesteps(1000, 10, "trailing").tolist() == list(range(999, 0, -100))
    assert discrete_timesteps(1000, 10, "leading").tolist() == list(range(901, 0, -100))
    assert discrete_timesteps(1000, 10, "linspace").tolist()[0] == 999
    assert discrete_timesteps(1000, 10, "linspace").tolist()[-1] == 0
    assert discrete_timesteps(1000, 1000, "trailing").tolist() == list(range(999, -1, -1))
    with pytest.raises(UsageError, match=r"1\.\.1000"):
        discrete_timesteps(1000, 1001)


@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace", "karras", "logsnr"])
@pytest.mark.parametrize("steps", [1, 2, 7, 50])
def test_grids_are_valid(spacing, steps):
    s = make_schedule(ScheduleConfig(kind="linear"))
    grid = make_grid(s, steps, spacing)
    assert grid.steps == steps
    check_sigmas(grid.sigmas)
    assert grid.describe()["spacing"] == spacing


def test_karras_grid_endpoints_and_rho():
    sig = karras_sigmas(18, 0.002, 80.0)
    assert float(sig[0]) == pytest.approx(80.0) and float(sig[-1]) == pytest.approx(0.002)
    # rho interpolates between uniform-in-sigma (rho = 1) and uniform-in-log-sigma (rho -> inf)
    linear, log_uniform = karras_sigmas(18, 0.002, 80.0, rho=1.0), karras_sigmas(18, 0.002, 80.0, rho=1e6)
    assert bool((log_uniform[1:-1] < sig[1:-1]).all()) and bool((sig[1:-1] < linear[1:-1]).all())


def test_continuous_schedule_rejects_discrete_spacing():
    with pytest.raises(UsageError, match="karras, logsnr"):
        make_grid(EDMSchedule(), 10, "trailing")
    assert make_grid(EDMSchedule(), 10).spacing == "karras"


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_non_positive_steps_rejected(bad):
    with pytest.raises(UsageError, match="positive integer"):
        make_grid(EDMSchedule(), bad)


def test_check_sigmas_rejects_bad_grids():
    with pytest.raises(ValueError, match="last sigma"):
        check_sigmas(torch.tensor([2.0, 1.0]))
    with pytest.raises(ValueError, match="decreasing"):
        check_sigmas(torch.tensor([1.0, 2.0, 0.0]))
    for bad in ([2.0, 2.0, 0.0], [2.0, float("nan"), 0.0], [float("nan"), 1.0, 0.0]):
        with pytest.raises(ValueError, match="decreasing"):
            check_sigmas(torch.tensor(bad))
    for shape in ((1,), (2, 2), ()):
        with pytest.raises(ValueError, match="1-D"):
            check_sigmas(torch.zeros(shape))


def test_check_sigmas_returns_the_grid_as_float64_floats():
    grid = torch.tensor([14.6, 0.1, 0.0], dtype=torch.float32)
    values = check_sigmas(grid)
    assert values == grid.double().tolist() and all(type(v) is float for v in values)


def test_training_sigma_densities():
    g = torch.Generator().manual_seed(0)
    edm = sample_training_sigmas(EDMSchedule(), 50000, generator=g)
    assert float(edm.log().mean()) == pytest.approx(-1.2, abs=0.03)
    assert float(edm.log().std()) == pytest.approx(1.2, abs=0.03)
    s = make_schedule(ScheduleConfig(kind="linear"))
    vp = sample_training_sigmas(s, 50000, generator=g)
    t = s.t_from_sigma(vp)
    assert torch.allclose(t, t.round(), atol=1e-6)
    assert float(t.mean()) == pytest.approx(499.5, abs=5)


def test_integer_timesteps_are_a_lookup_equal_to_the_interpolated_path():
    sched = make_schedule(ScheduleConfig(kind="linear"))
    t = torch.tensor([0, 1, 17, 500, 998, 999])
    assert torch.equal(sched.sigma(t), sched.sigma(t.to(torch.float64)))
    assert torch.equal(sched.sigma(torch.tensor([-3, 5000])), sched.sigma(torch.tensor([0.0, 999.0])))  # clamped


# --- closed forms, written out from the papers (each kills a mutant that the tests above let through) ------------


def test_cosine_schedule_is_nichol_dhariwal_eq_17():
    """alpha_bar(t) = f(t) / f(0), f(t) = cos((t/T + s) / (1 + s) * pi/2)^2, s = 0.008, betas clipped at 0.999;
    diffusers' convention: alpha_bar[i] is alpha_bar((i + 1) / T)."""
    T, s = 1000, 0.008

    def f(u):
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    alpha_bar = torch.cumprod(1 - cosine_betas(T), 0)
    expected = torch.tensor([f((i + 1) / T) / f(0) for i in range(T)], dtype=torch.float64)
    unclipped = 990  # the last betas hit the 0.999 clip near t = T
    torch.testing.assert_close(alpha_bar[:unclipped], expected[:unclipped], rtol=1e-9, atol=1e-12)
    assert float(cosine_betas(T).max()) == 0.999
    assert make_schedule(ScheduleConfig(kind="cosine")).alpha_bar.tolist() == alpha_bar.tolist()


def test_edm_snr_add_noise_and_to_vp_in_float64():
    sigma = torch.tensor([0.002, 0.5, 3.0, 80.0], dtype=torch.float64)
    assert EDMSchedule().snr(sigma).tolist() == (1 / sigma**2).tolist()
    assert EDMSchedule().snr(0.1).dtype == torch.float64 and float(EDMSchedule().snr(0.1)) == 1 / 0.1**2
    x0, noise = torch.randn(4, 1, 2, 2, dtype=torch.float64), torch.randn(4, 1, 2, 2, dtype=torch.float64)
    assert torch.equal(add_noise(x0, sigma, noise), x0 + sigma.reshape(4, 1, 1, 1) * noise)
    x = torch.randn(2, 3, dtype=torch.float64)
    exact = x / math.sqrt(1 + 0.1**2)  # a Python float sigma is taken in float64, not float32
    assert torch.equal(to_vp(x, 0.1), exact)


def test_karras_and_logsnr_grids_in_float64_closed_form():
    """Karras et al. 2022, Eq. 5 and uniform log sigma, in float64 (one step: sigma_max alone)."""
    n, lo, hi, rho = 7, 0.002, 80.0, 7.0
    karras = [(hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho for i in range(n)]
    got = karras_sigmas(n, lo, hi, rho)
    assert got.dtype == torch.float64 and got.tolist() == pytest.approx(karras, rel=1e-14)
    log_uniform = [math.exp(math.log(hi) + i / (n - 1) * (math.log(lo) - math.log(hi))) for i in range(n)]
    got = logsnr_sigmas(n, lo, hi)
    assert got.dtype == torch.float64 and got.tolist() == pytest.approx(log_uniform, rel=1e-14)
    for one in (karras_sigmas(1, lo, hi), logsnr_sigmas(1, lo, hi)):
        assert one.dtype == torch.float64 and one.tolist() == [pytest.approx(hi, rel=1e-15)]


def test_training_sigmas_come_from_the_generator():
    """Seeded: log sigma = P_mean + P_std * randn(generator) exactly (EDM); t = randint(0, T, generator) (VP),
    so t = 0 occurs; the global RNG plays no part."""
    edm = sample_training_sigmas(EDMSchedule(), 64, generator=torch.Generator().manual_seed(3), p_mean=-0.5,
                                 p_std=1.5)
    expected = (-0.5 + 1.5 * torch.randn(64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)).exp()
    torch.testing.assert_close(edm, expected, rtol=1e-15, atol=0)
    vp_schedule = make_schedule(ScheduleConfig(kind="linear", num_timesteps=4))
    t = torch.randint(0, 4, (256,), generator=torch.Generator().manual_seed(5))
    vp = sample_training_sigmas(vp_schedule, 256, generator=torch.Generator().manual_seed(5))
    assert torch.equal(vp, vp_schedule.sigma(t)) and bool((t == 0).any())
    torch.manual_seed(0)
    a = sample_training_sigmas(EDMSchedule(), 8, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(1)
    assert torch.equal(a, sample_training_sigmas(EDMSchedule(), 8, generator=torch.Generator().manual_seed(1)))


def test_scaled_linear_is_stable_diffusions_schedule():
    """betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2 in float64."""
    expected = [(0.00085**0.5 + i / 999 * (0.012**0.5 - 0.00085**0.5)) ** 2 for i in range(1000)]
    got = scaled_linear_betas()
    assert got.dtype == torch.float64 and got.tolist() == pytest.approx(expected, rel=1e-12)


def test_t_from_sigma_of_zero_is_t_zero():
    s = make_schedule(ScheduleConfig(kind="linear"))
    assert float(s.t_from_sigma(torch.tensor(0.0, dtype=torch.float64))) == 0.0
    assert float(s.t_from_sigma(torch.tensor(1e-300, dtype=torch.float64))) == 0.0


def test_grid_description_is_what_was_used():
    s = make_schedule(ScheduleConfig(kind="linear"))
    grid = make_grid(s, 3, "trailing")
    assert grid.describe() == {"spacing": "trailing", "sigmas": [round(float(v), 6) for v in grid.sigmas],
                               "timesteps": [999, 666, 332]}
    assert grid.describe()["sigmas"][0] != float(grid.sigmas[0])  # rounded to 6 decimals, not left as is
    assert make_grid(EDMSchedule(), 2).describe() == {"spacing": "karras", "sigmas": [80.0, 0.002, 0.0]}


def test_discrete_timesteps_closed_forms():
    # leading: arange(n) * (T // n) + offset, reversed (T // n, not T / n, when n does not divide T)
    assert discrete_timesteps(1000, 7, "leading").tolist() == [853, 711, 569, 427, 285, 143, 1]
    assert discrete_timesteps(10, 10, "leading").tolist() == [9, 9, 8, 7, 6, 5, 4, 3, 2, 1]  # clamped at T - 1
    assert discrete_timesteps(1000, 7, "trailing").tolist() == [999, 856, 713, 570, 428, 285, 142]
    assert discrete_timesteps(1000, 7, "linspace").tolist() == [999, 832, 666, 500, 333, 166, 0]
    with pytest.raises(UsageError, match=r"unknown timestep spacing 'karras'.*trailing, leading, linspace"):
        discrete_timesteps(1000, 7, "karras")

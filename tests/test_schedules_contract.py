"""core/schedules.py at its edges: what each config builds, each refusal's exact line, the grid each spacing gives,
tuned and native grids, the two sigma interpolations and the forward chain, with values computed by hand."""

import math

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.core.schedules import (
    GRIDS,
    ZERO_SNR_ALPHA_BAR,
    EDMSchedule,
    ScheduleConfig,
    SigmaGrid,
    VPSchedule,
    check_sigmas,
    discrete_timesteps,
    forward_chain,
    karras_sigmas,
    linear_betas,
    make_grid,
    make_schedule,
    q_sample,
    q_step,
    rescale_zero_terminal_snr,
    scaled_linear_betas,
    tuned_sigma_grid,
)

F64 = torch.float64


def _vp(values, **kw):
    return VPSchedule(torch.tensor(values, dtype=F64), **kw)


# --- make_schedule ---------------------------------------------------------------------------------------------


def test_each_kind_builds_its_published_schedule():
    lin = make_schedule(ScheduleConfig(kind="linear", num_timesteps=10))
    assert lin.name == "linear" and torch.allclose(lin.betas, linear_betas(10, 1e-4, 0.02), rtol=1e-12, atol=0)
    sl = make_schedule(ScheduleConfig(kind="scaled_linear", num_timesteps=10))
    assert sl.name == "scaled_linear"
    assert torch.allclose(sl.betas, scaled_linear_betas(10, 0.00085, 0.012), rtol=1e-12, atol=0)
    own = make_schedule(ScheduleConfig(kind="linear", num_timesteps=10, beta_start=0.001, beta_end=0.05))
    assert float(own.betas[0]) == pytest.approx(0.001) and float(own.betas[-1]) == pytest.approx(0.05)
    own = make_schedule(ScheduleConfig(kind="scaled_linear", num_timesteps=10, beta_start=0.001, beta_end=0.05))
    assert float(own.betas[0]) == pytest.approx(0.001) and float(own.betas[-1]) == pytest.approx(0.05)
    edm = make_schedule(ScheduleConfig(kind="edm", sigma_min=0.01, sigma_max=50.0))
    assert edm == EDMSchedule(0.01, 50.0) and edm.name == "edm" and not edm.is_discrete
    assert make_schedule(ScheduleConfig(kind="cosine", num_timesteps=2)).num_timesteps == 2  # the smallest T


def test_zero_terminal_snr_is_named_and_keeps_sigma_finite_and_increasing():
    z = make_schedule(ScheduleConfig(kind="linear", num_timesteps=1000, zero_terminal_snr=True))
    assert z.name == "linear+zsnr"
    raw = torch.cumprod(1 - rescale_zero_terminal_snr(linear_betas(1000)), 0)
    assert float(z.alpha_bar[-1]) == min(ZERO_SNR_ALPHA_BAR, float(raw[-2]) / 2) == float(raw[-2]) / 2
    c = make_schedule(ScheduleConfig(kind="cosine", num_timesteps=1000, zero_terminal_snr=True))
    assert c.name == "cosine+zsnr" and float(c.alpha_bar[-1]) == ZERO_SNR_ALPHA_BAR  # 2^-24 is the smaller here
    assert make_schedule(ScheduleConfig(kind="cosine", num_timesteps=10)).name == "cosine"


@pytest.mark.parametrize(("config", "line"), [
    (ScheduleConfig(kind="vp"), "unknown schedule 'vp' (valid: linear, cosine, scaled_linear, edm)"),
    (ScheduleConfig(kind="edm", sigma_min=0.0), "need 0 < sigma_min < sigma_max, got 0.0, 80.0"),
    (ScheduleConfig(kind="edm", sigma_min=2.0, sigma_max=2.0), "need 0 < sigma_min < sigma_max, got 2.0, 2.0"),
    (ScheduleConfig(kind="edm", sigma_min=3.0, sigma_max=2.0), "need 0 < sigma_min < sigma_max, got 3.0, 2.0"),
    (ScheduleConfig(kind="linear", num_timesteps=1), "num_timesteps must be at least 2, got 1"),
])
def test_bad_schedule_configs_are_refused_in_one_line(config, line):
    with pytest.raises(UsageError) as e:
        make_schedule(config)
    assert str(e.value) == line


def test_edm_accepts_a_range_below_one():
    assert make_schedule(ScheduleConfig(kind="edm", sigma_min=0.5, sigma_max=0.9)) == EDMSchedule(0.5, 0.9)


# --- VPSchedule ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "line"), [
    ([0.9], "alpha_bar must be a 1-D tensor with values in (0, 1]"),
    ([[0.9, 0.5]], "alpha_bar must be a 1-D tensor with values in (0, 1]"),
    ([0.9, 0.0], "alpha_bar must be a 1-D tensor with values in (0, 1]"),
    ([1.5, 0.5], "alpha_bar must be a 1-D tensor with values in (0, 1]"),
    ([0.9, 0.9], "alpha_bar must be strictly decreasing"),
    ([0.5, 0.9], "alpha_bar must be strictly decreasing"),
])
def test_bad_alpha_bar_is_refused(values, line):
    with pytest.raises(ValueError) as e:
        _vp(values)
    assert str(e.value) == line


def test_alpha_bar_may_start_at_one_and_is_kept_in_float64():
    s = VPSchedule(torch.tensor([1.0, 0.5], dtype=torch.float32))
    assert s.alpha_bar.dtype == F64 and s.alpha_bar.tolist() == [1.0, 0.5] and s.sigma_min == 0.0
    with pytest.raises(UsageError) as e:
        _vp([0.9, 0.5], interpolation="cubic")
    assert str(e.value) == "unknown sigma interpolation 'cubic' (valid: log, linear)"


def test_fractional_t_interpolates_log_sigma_or_sigma():
    ab = [0.8, 0.5, 0.2]  # sigma = 0.5, 1, 2
    log, lin = _vp(ab), _vp(ab, interpolation="linear")
    assert float(log.sigma(0.5)) == pytest.approx(math.sqrt(0.5 * 1.0), rel=1e-12)  # geometric mean
    assert float(lin.sigma(0.5)) == pytest.approx(0.75, rel=1e-12)  # arithmetic mean
    assert float(lin.sigma(1.25)) == pytest.approx(0.75 * 1.0 + 0.25 * 2.0, rel=1e-12)
    assert float(lin.sigma(-3.0)) == pytest.approx(0.5) and float(lin.sigma(7.5)) == pytest.approx(2.0)  # clamped
    assert lin.sigma(torch.tensor([0, 2])).tolist() == pytest.approx([0.5, 2.0])  # integer t: a lookup
    for s in (log, lin):
        t = torch.tensor([0.0, 0.3, 1.0, 1.6, 2.0], dtype=F64)
        assert torch.allclose(s.t_from_sigma(s.sigma(t)), t, atol=1e-12)
    assert float(lin.t_from_sigma(0.75)) == pytest.approx(0.5, abs=1e-12)
    assert float(log.t_from_sigma(0.75)) == pytest.approx(math.log(1.5) / math.log(2), abs=1e-12)
    assert float(lin.t_from_sigma(0.1)) == 0.0 and float(lin.t_from_sigma(9.0)) == 2.0  # clamped


# --- grids -----------------------------------------------------------------------------------------------------


def test_the_default_spacing_is_the_schedules_own():
    vp = make_schedule(ScheduleConfig(kind="linear", num_timesteps=1000))
    g = make_grid(vp, 10)
    assert g.spacing == "trailing" and g.timesteps.tolist() == list(range(999, 0, -100))
    assert g.sigmas.dtype == F64 and g.sigmas[-1] == 0 and torch.allclose(g.sigmas[:-1], vp.sigma(g.timesteps))
    leading = VPSchedule(vp.alpha_bar, default_spacing="leading", steps_offset=1)
    assert make_grid(leading, 10).spacing == "leading"
    assert make_grid(leading, 10).timesteps.tolist() == list(range(901, 0, -100))
    zero = VPSchedule(vp.alpha_bar, default_spacing="leading", steps_offset=0)
    assert make_grid(zero, 10).timesteps.tolist() == list(range(900, -1, -100))
    edm = EDMSchedule(0.002, 80.0)
    g = make_grid(edm, 5)
    assert g.spacing == "karras" and g.timesteps is None
    assert torch.equal(g.sigmas, torch.cat([karras_sigmas(5, 0.002, 80.0, 7.0), torch.zeros(1, dtype=F64)]))
    assert torch.equal(make_grid(edm, 5, rho=3.0).sigmas[:-1], karras_sigmas(5, 0.002, 80.0, 3.0))


def test_spacing_refusals_are_one_line():
    with pytest.raises(UsageError) as e:
        make_grid(EDMSchedule(), 5, "cubic")
    assert str(e.value) == f"unknown grid spacing 'cubic' (valid: {', '.join(GRIDS)})"
    with pytest.raises(UsageError) as e:
        make_grid(EDMSchedule(), 5, "leading")
    assert str(e.value) == "spacing 'leading' needs a discrete-time model (valid here: karras, logsnr)"
    with pytest.raises(UsageError) as e:
        make_grid(EDMSchedule(), 0)
    assert str(e.value) == "steps must be a positive integer, got 0"


def test_a_native_grid_is_the_default_only():
    vp = make_schedule(ScheduleConfig(kind="linear", num_timesteps=1000))
    calls = []

    def native(steps):
        calls.append(steps)
        return torch.tensor([5.0, 1.0, 0.0], dtype=F64), torch.tensor([900.5, 400.25])

    s = VPSchedule(vp.alpha_bar, default_spacing="leading", native_grid=native)
    g = make_grid(s, 2)
    assert calls == [2] and g.spacing == "leading" and g.sigmas.tolist() == [5.0, 1.0, 0.0]
    assert g.timesteps.tolist() == [900.5, 400.25]
    assert g.describe() == {"spacing": "leading", "sigmas": [5.0, 1.0, 0.0], "timesteps": [900.5, 400.25]}
    other = make_grid(s, 2, "trailing")  # another spacing: make_grid's own rule, the native one not asked
    assert calls == [2] and other.timesteps.tolist() == [999, 499]


def test_describe_rounds_fractional_timesteps_and_keeps_integers():
    g = SigmaGrid(torch.tensor([3.0, 1.23456789, 0.0], dtype=F64), "x", torch.tensor([999.0, 12.345678]))
    assert g.describe() == {"spacing": "x", "sigmas": [3.0, 1.234568, 0.0], "timesteps": [999, 12.3457]}
    assert isinstance(g.describe()["timesteps"][0], int)
    assert "timesteps" not in SigmaGrid(g.sigmas, "karras").describe()


def test_tuned_grids():
    tuned = {2: [10.0, 1.0, 0.0], 3: [10, 2, 0.5, 0]}
    g = make_grid(EDMSchedule(), 3, "tuned", tuned=tuned)
    assert g.spacing == "tuned" and g.sigmas.dtype == F64 and g.sigmas.tolist() == [10.0, 2.0, 0.5, 0.0]
    assert tuned_sigma_grid(tuned, 2).sigmas.tolist() == [10.0, 1.0, 0.0]
    with pytest.raises(UsageError) as e:
        tuned_sigma_grid({}, 2)
    assert str(e.value) == ("spacing 'tuned' needs grids tuned for this model and sampler: run `diffuscope "
                            "tune-steps --model M --sampler S --steps ... --out DIR --install`")
    with pytest.raises(UsageError) as e:
        make_grid(EDMSchedule(), 5, "tuned", tuned={12: [1.0, 0.0], 3: [1.0, 0.5, 0.1, 0.0]})
    assert str(e.value) == "no tuned grid for 5 steps (tuned: 3, 12)"
    with pytest.raises(ValueError, match="strictly decreasing"):
        tuned_sigma_grid({2: [1.0, 2.0, 0.0]}, 2)


def test_check_sigmas_lines():
    assert check_sigmas(torch.tensor([2.0, 0.5, 0.0], dtype=torch.float32)) == [2.0, 0.5, 0.0]
    with pytest.raises(ValueError) as e:
        check_sigmas(torch.tensor([3.0, 2.0, 0.5]))
    assert str(e.value) == "the last sigma must be 0, got 0.5"
    with pytest.raises(ValueError) as e:
        check_sigmas(torch.tensor([3.0, 3.0, 0.0]))
    assert str(e.value) == "sigmas must be strictly decreasing"
    x = torch.tensor([1 + 1e-12, 1.0, 0.0], dtype=F64)  # distinct in float64 only: checked in float64
    assert check_sigmas(x)[0] > check_sigmas(x)[1]


def test_discrete_timesteps_are_exact_for_large_t():
    ts = discrete_timesteps(2**25 + 1, 2, "linspace")
    assert ts.tolist() == [2**25, 0]
    ts = discrete_timesteps(2**25 + 3, 3, "trailing")
    assert ts.tolist() == [2**25 + 2, round((2**25 + 3) * 2 / 3) - 1, round((2**25 + 3) / 3) - 1]


# --- the forward process ---------------------------------------------------------------------------------------


def test_the_chain_is_the_product_of_its_steps_with_the_generators_noise():
    s = _vp([0.9, 0.7, 0.4, 0.2])
    x0 = torch.randn((2, 3), dtype=F64, generator=torch.Generator().manual_seed(0))
    out = forward_chain(x0, s, [0, 1, 3], generator=torch.Generator().manual_seed(7))
    g, x, manual = torch.Generator().manual_seed(7), x0, {0: x0}
    betas = s.betas.tolist()
    for k in (1, 2, 3):
        x = math.sqrt(1 - betas[k - 1]) * x + math.sqrt(betas[k - 1]) * torch.randn((2, 3), generator=g, dtype=F64)
        manual[k] = x
    assert sorted(out) == [0, 1, 3] and out[0] is x0
    assert torch.equal(out[1], manual[1]) and torch.equal(out[3], manual[3]) and out[3].dtype == F64
    assert forward_chain(x0, s, []) == {}
    assert torch.equal(forward_chain(x0, s, [2], generator=torch.Generator().manual_seed(7))[2], manual[2])
    noise = torch.full((2, 3), 0.5, dtype=F64)
    assert torch.equal(q_step(x0, 0.36, noise), 0.8 * x0 + 0.6 * noise)


def test_q_sample_is_computed_in_the_images_dtype():
    x0 = torch.ones(2, 1, 2, 2)
    noise = torch.full((2, 1, 2, 2), 2.0)
    out = q_sample(x0, torch.tensor([0.64, 0.36], dtype=F64), noise)
    assert out.dtype == torch.float32
    assert out[:, 0, 0, 0].tolist() == pytest.approx([0.8 + 0.6 * 2, 0.6 + 0.8 * 2])

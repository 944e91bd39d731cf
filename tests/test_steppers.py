"""Samplers one step at a time (samplers/steppers.py), down and up the ODE, on exact denoisers (milliseconds)."""

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.core.reference import GaussianDenoiser, GaussianMixtureDenoiser
from diffuscope.core.schedules import karras_sigmas
from diffuscope.samplers import get_sampler
from diffuscope.samplers.steppers import DIFFERENTIABLE, STEPPERS, differentiable_stepper, stepper


def _mixture():
    g = torch.Generator().manual_seed(0)
    return GaussianMixtureDenoiser(torch.randn((4, 1, 4, 4), generator=g, dtype=torch.float64), 0.15)


GRIDS = {
    "karras 7": torch.cat([karras_sigmas(7, 0.002, 20.0), torch.zeros(1, dtype=torch.float64)]),
    "through sigma 1": torch.tensor([20.0, 5.0, 2.0, 1.0, 0.4, 0.1, 0.0], dtype=torch.float64),
}


def _walk(step, d, x, sigmas):
    hist, states = (), []
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True):
        x, hist = step(x, d(x, sigma), sigma, sigma_next, hist)
        states.append((x, hist))
    return states


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("sampler", sorted(STEPPERS))
def test_each_stepper_reproduces_its_sampler(sampler, grid):
    """Stepping along a grid one step at a time is the sampler function itself (same formulas, same history),
    on a grid long enough to fill iPNDM's 4-deep history and on one that passes through sigma = 1."""
    d, sigmas = _mixture(), GRIDS[grid]
    x0 = torch.randn((3, 1, 4, 4), dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 20.0
    expected = get_sampler(sampler).fn(d, x0, sigmas)
    x, hist = _walk(STEPPERS[sampler], d, x0, sigmas)[-1]
    assert torch.allclose(x, expected, atol=1e-12, rtol=0)
    assert hist == ()  # the last step, to sigma 0, is the denoised image and forgets the path
    assert torch.equal(x, d(_walk(STEPPERS[sampler], d, x0, sigmas)[-2][0], float(sigmas[-2])))


@pytest.mark.parametrize(("sampler", "depths"), [("euler", [0] * 5), ("ddim", [0] * 5), ("dpmpp_2m", [2] * 5),
                                                 ("ipndm", [1, 2, 3, 4, 4]), ("ipndm_v", [1, 2, 3, 4, 4])])
def test_history_holds_what_the_next_step_needs(sampler, depths):
    """iPNDM keeps the newest (sigma, d) pairs, at most 4 (Adams-Bashforth 4); DPM++ 2M the previous denoised and
    its h; Euler nothing."""
    d = _mixture()
    sigmas = GRIDS["karras 7"][:6]  # five steps, none to 0
    x0 = torch.randn((2, 1, 4, 4), dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 20.0
    states = _walk(STEPPERS[sampler], d, x0, sigmas)
    assert [len(h) for _, h in states] == depths
    if sampler.startswith("ipndm"):
        (x4, h4), (_, h5) = states[3], states[4]
        assert [s for s, _ in h5] == sigmas[[4, 3, 2, 1]].tolist()  # newest first, sigma 20 forgotten
        assert torch.allclose(h5[0][1], (x4 - d(x4, float(sigmas[4]))) / float(sigmas[4]), atol=1e-15)
        assert h5[1:] == h4[:3]


def test_ipndm_steps_use_the_adams_bashforth_coefficients():
    """A hand-made path: derivatives d1 (oldest) .. d4 (newest) at sigmas 4, 3, 2, 1, a step from 1 to 0.5:
    x + (0.5 - 1) * (55 d4 - 59 d3 + 37 d2 - 9 d1) / 24, with d4 = (x - denoised) / 1."""
    x, denoised = torch.tensor([2.0], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64)
    ds = [torch.tensor([v], dtype=torch.float64) for v in (0.7, -0.2, 1.3)]  # d3, d2, d1: newest first
    hist = ((2.0, ds[0]), (3.0, ds[1]), (4.0, ds[2]))
    out, new_hist = STEPPERS["ipndm"](x, denoised, 1.0, 0.5, hist)
    d4 = 1.5
    expected = 2.0 - 0.5 * (55 * d4 - 59 * 0.7 + 37 * -0.2 - 9 * 1.3) / 24
    assert float(out) == pytest.approx(expected, abs=1e-14)
    assert new_hist[0][0] == 1.0 and float(new_hist[0][1]) == d4 and new_hist[1:] == hist
    first, _ = STEPPERS["ipndm"](x, denoised, 1.0, 0.5, ())  # no history: an Euler step
    assert float(first) == pytest.approx(2.0 - 0.5 * d4, abs=1e-15)
    two, _ = STEPPERS["ipndm"](x, denoised, 1.0, 0.5, hist[:1])  # one: (3 d_new - d_old) / 2
    assert float(two) == pytest.approx(2.0 - 0.5 * (3 * d4 - 0.7) / 2, abs=1e-15)


@pytest.mark.parametrize(("sampler", "order"), [("euler", 1), ("ddim", 1), ("dpmpp_2m", 2), ("ipndm", 2),
                                                ("ipndm_v", 3)])
def test_steps_run_up_the_ode_at_the_samplers_order(sampler, order):
    """Upwards (sigma_next > sigma, what inversion.py runs) on the exact Gaussian from sigma 0.01 to 10, where the
    state moves by 21: the error to the closed-form ODE solution falls 2^order-fold from 100 to 200 steps (measured:
    2.00, 2.00, 3.99, 4.06 and 30 for iPNDM v, whose variable-step coefficients are of order up to 4)."""
    d = GaussianDenoiser(0.3, 0.5)
    x = 0.3 + 0.5 * torch.randn((4, 1, 3, 3), dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    exact = d.ode_solution(x, 0.01, 10.0)
    errors = []
    for steps in (100, 200):
        top = _walk(STEPPERS[sampler], d, x, torch.flip(karras_sigmas(steps, 0.01, 10.0), [0]))[-1][0]
        errors.append(float((top - exact).abs().max()))
    ratio = errors[0] / errors[1]
    assert 0.9 * 2**order < ratio < (1.2 * 2**order if order < 3 else 64), errors
    assert errors[1] < 0.2


def test_steppers_are_looked_up_by_any_name_and_refused_in_one_line():
    assert stepper("iPNDM v") is STEPPERS["ipndm_v"] and stepper("dpm++_2m") is STEPPERS["dpmpp_2m"]
    assert differentiable_stepper("DDIM") is STEPPERS["ddim"]
    assert differentiable_stepper("iPNDM") is STEPPERS["ipndm"]
    with pytest.raises(UsageError) as e:
        stepper("Heun")
    assert str(e.value) == ("sampler 'Heun' has no one-step form here (its step needs more than one network call, "
                            "or noise); valid: Euler, DDIM, iPNDM, iPNDM v, DPM++ 2M")
    with pytest.raises(UsageError) as e:
        differentiable_stepper("DPM++ 2M")
    assert str(e.value) == ("sampler 'DPM++ 2M' has no step differentiable in sigma (learned step times need one); "
                            "valid: Euler, DDIM, iPNDM, iPNDM v")
    assert set(DIFFERENTIABLE) < set(STEPPERS)

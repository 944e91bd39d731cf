"""Parity with diffusers' schedulers on a tiny randomly initialised UNet2DModel (built from config, no hub).

Our samplers run on ``denoiser_from_diffusers(unet, scheduler)`` over the sigma grid of the scheduler's own
timesteps; diffusers runs its usual loop (``scale_model_input`` -> UNet -> ``step``). Every step's state and the
final sample must agree to 1e-4 relative error (they agree to ~1e-7 in practice, float32 rounding). Schedulers that
work in VP space (DDPM, DDIM, DPM-Solver, UniPC) are compared through x_vp = x / sqrt(1 + sigma^2).

Differences found (and how the configurations here avoid them):

- Karras-style schedulers (Euler, Heun) with ``timestep_spacing="leading"`` start from noise * sqrt(sigma_max^2 + 1)
  (``init_noise_sigma``), not noise * sigma_max; ``linspace``/``trailing`` use sigma_max. We feed the same initial x.
- ``linspace`` spacing differs between schedulers: Euler/Heun use fractional timesteps linspace(0, T-1, N) and
  interpolate sigma *linearly in sigma* at them, while our VPSchedule (and k-diffusion) interpolate log sigma;
  the model then sees slightly different (sigma, t) pairs. DPM-Solver's linspace is linspace(0, T-1, N+1) rounded,
  dropping the last point; ours (``discrete_timesteps``) is round(linspace(0, T-1, N)). Parity tests therefore use
  integer timesteps (leading/trailing, or DPM-Solver's rounded linspace) and take the grid from the scheduler.
- DDIM: ``set_alpha_to_one=True`` makes its last step land on sigma = 0 (matches our final 0); with False it stops
  at alpha_bar[0] (sigma ~ 0.01) and returns a slightly noisy image. It always steps to t - T//N (ANCHORS.md), so
  only leading, or trailing with N | T, are compared. ``clip_sample`` defaults to True (DDIM/DDPM): set False.
- diffusers' ``leading`` uses ``steps_offset`` (default 0 -> 900..0 for N = 10); our ``discrete_timesteps`` default
  offset is 1 (Stable Diffusion's 901..1); both are checked against diffusers below.
- DDPM draws its noise with the same ``torch.randn`` call as ours (float32, one CPU generator), so a generator seeded
  the same gives the same trajectory; it draws (zero-variance) noise once more on the last step, after ours stop.
- DPM-Solver++(2M) = diffusers ``solver_type="midpoint"``; k-diffusion's 3M uses the "heun" form on its second
  (order-2 warm-up) step, so 3M parity needs ``solver_type="heun"``, ``lower_order_final=False`` (diffusers otherwise
  lowers the order of the second-to-last step when N < 15). With ``final_sigmas_type="zero"`` the last step returns
  x0_hat in both. Schedulers keep state between calls: a fresh one per run.
- UniPC bh1 with ``final_sigmas_type="zero"`` returns NaN in diffusers 0.42.1 (its last step multiplies
  B(h) = -h = -inf by a zero residual); bh2 is fine. Ours returns x0_hat on the step to 0 for both.
- UniPC: our callback's x is the corrected state, diffusers keeps it in ``last_sample`` (``step`` returns the
  uncorrected predictor output); the corrector of the last interior point does not change the final sample.
"""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffuscope.adapters import denoiser_from_diffusers, schedule_from_diffusers, sigmas_for_timesteps  # noqa: E402
from diffuscope.core.schedules import discrete_timesteps, make_grid  # noqa: E402
from diffuscope.samplers import (  # noqa: E402
    SDENoise,
    UniPCOptions,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_3m_sde,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    sample_unipc,
)

TOL = 1e-4
PREDICTIONS = ["epsilon", "v_prediction"]
COND = torch.tensor([0, 2])


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run faster on one thread


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8,
        in_channels=2,
        out_channels=2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        num_class_embeds=3,
    ).eval()


@pytest.fixture(scope="module")
def noise():
    return torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(1))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def to_vp(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return x / (1 + sigma**2) ** 0.5


@torch.no_grad()
def diffusers_loop(unet, scheduler, x, *, keep=None, **step_kwargs):
    """diffusers' own sampling loop; returns the state after every step (``keep`` picks another record)."""
    states = []
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x, t)
        out = unet(model_input, t, class_labels=COND).sample
        x = scheduler.step(out, t, x, **step_kwargs).prev_sample
        states.append(x if keep is None else keep(scheduler, x))
    return x, [s for s in states if s is not None]


def ours(fn, unet, scheduler, x, **kw):
    denoiser = denoiser_from_diffusers(unet, scheduler)
    sigmas = sigmas_for_timesteps(denoiser.schedule, scheduler.timesteps)
    seen = []
    out = fn(denoiser, x, sigmas, cond=COND, callback=seen.append, **kw)
    return out, seen, sigmas


def check(out, seen, final, states, *, vp: bool, offset: int = 1, final_is_nan: bool = False):
    """Our per-step states (seen[i + offset].x) against diffusers' (states[i]), then the final samples."""
    ours_states = [to_vp(s.x, s.sigma) if vp else s.x for s in seen[offset:]]
    assert len(ours_states) >= len(states) - 1
    for i, (a, b) in enumerate(zip(ours_states, states)):
        assert rel(a, b) < TOL, (i, rel(a, b))
    assert torch.isfinite(out).all()
    if final_is_nan:
        assert torch.isnan(final).all()
    else:
        assert rel(out, final) < TOL, rel(out, final)


# --- the adapter and grids -----------------------------------------------------------------------------------


def test_schedule_and_timesteps_match_diffusers():
    for beta_schedule in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        sch = diffusers.DDPMScheduler(beta_schedule=beta_schedule)
        schedule = schedule_from_diffusers(sch.config)
        torch.testing.assert_close(schedule.alpha_bar, sch.alphas_cumprod.double())
    zsnr = schedule_from_diffusers(diffusers.DDPMScheduler(rescale_betas_zero_snr=True))
    assert zsnr.name.endswith("+zsnr") and zsnr.sigma_max > 1000
    for n in (10, 25, 50, 7):
        lead = diffusers.DDIMScheduler(timestep_spacing="leading", steps_offset=1)
        lead.set_timesteps(n)
        assert discrete_timesteps(1000, n, "leading").tolist() == lead.timesteps.tolist()
        trail = diffusers.EulerDiscreteScheduler(timestep_spacing="trailing")
        trail.set_timesteps(n)
        assert discrete_timesteps(1000, n, "trailing").tolist() == trail.timesteps.long().tolist()
        euler = diffusers.EulerDiscreteScheduler(timestep_spacing="trailing")
        euler.set_timesteps(n)
        grid = make_grid(schedule_from_diffusers(euler), n, "trailing").sigmas
        torch.testing.assert_close(grid, euler.sigmas.double(), rtol=1e-6, atol=0)


def test_sigmas_for_timesteps_is_the_table_lookup_or_the_interpolation():
    schedule = schedule_from_diffusers({"num_train_timesteps": 1000})
    whole = torch.tensor([999.0, 666.0, 333.0, 0.0])  # float timesteps with whole values (Euler, Heun): a lookup
    expected = torch.cat([schedule.sigma(whole.long()), torch.zeros(1, dtype=torch.float64)])
    for ts in (whole, whole.long(), whole.unsqueeze(0)):
        assert torch.equal(sigmas_for_timesteps(schedule, ts), expected)
    interleaved = torch.tensor([999.0, 666.0, 666.0, 333.0, 333.0, 0.0, 0.0])  # HeunDiscreteScheduler's form
    assert torch.equal(sigmas_for_timesteps(schedule, interleaved), expected)
    fractional = torch.tensor([999.0, 500.5, 0.25])
    got = sigmas_for_timesteps(schedule, fractional)
    assert torch.equal(got[:-1], schedule.sigma(fractional.double())) and got[-1] == 0
    clamped = sigmas_for_timesteps(schedule, torch.tensor([1200, -3]))[:2]
    assert torch.equal(clamped, schedule.sigma(torch.tensor([999, 0])))


def test_schedule_depends_on_the_betas_only():
    a = schedule_from_diffusers(diffusers.EulerDiscreteScheduler(beta_schedule="scaled_linear"))
    b = schedule_from_diffusers(diffusers.DDIMScheduler(beta_schedule="scaled_linear", timestep_spacing="leading"))
    assert torch.equal(a.alpha_bar, b.alpha_bar)  # same betas: the same schedule, whatever the scheduler class
    others = [
        schedule_from_diffusers({"num_train_timesteps": 1000}),
        schedule_from_diffusers({"num_train_timesteps": 500}),
        schedule_from_diffusers(diffusers.DDPMScheduler(rescale_betas_zero_snr=True)),
        schedule_from_diffusers({"num_train_timesteps": 4, "trained_betas": [0.1, 0.2, 0.3, 0.4]}),
        schedule_from_diffusers({"num_train_timesteps": 4, "trained_betas": [0.1, 0.2, 0.3, 0.5]}),
    ]
    assert len({tuple(s.alpha_bar.tolist()) for s in [a, *others]}) == 6
    torch.testing.assert_close(others[4].betas, torch.tensor([0.1, 0.2, 0.3, 0.5], dtype=torch.float64))
    # a zero-terminal-SNR schedule comes out the same from DDPM (alpha_bar[-1] = 0) and Euler (2^-24)
    euler_zsnr = schedule_from_diffusers(diffusers.EulerDiscreteScheduler(rescale_betas_zero_snr=True))
    torch.testing.assert_close(euler_zsnr.alpha_bar, others[2].alpha_bar)


def test_adapter_rejects_unknown_prediction_type(unet):
    from diffuscope.checks.errors import UsageError

    with pytest.raises(UsageError, match="prediction_type"):
        denoiser_from_diffusers(unet, {"num_train_timesteps": 1000, "prediction_type": "flow"})


# --- sampler parity ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction_type", [*PREDICTIONS, "sample"])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_euler(unet, noise, prediction_type, spacing):
    sch = diffusers.EulerDiscreteScheduler(prediction_type=prediction_type, timestep_spacing=spacing)
    sch.set_timesteps(8)
    x = noise * sch.init_noise_sigma
    out, seen, _ = ours(sample_euler, unet, sch, x)
    final, states = diffusers_loop(unet, sch, x)
    check(out, seen, final, states, vp=False)


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
@pytest.mark.parametrize(("spacing", "steps"), [("trailing", 8), ("leading", 5), ("trailing", 1)])
def test_euler_ancestral_with_shared_noise(unet, noise, prediction_type, spacing, steps):
    """Euler a draws one noise tensor per step from the generator, as diffusers' EulerAncestralDiscreteScheduler
    does: with one generator seeded the same, the trajectories agree step by step."""
    sch = diffusers.EulerAncestralDiscreteScheduler(prediction_type=prediction_type, timestep_spacing=spacing)
    sch.set_timesteps(steps)
    x = noise * sch.init_noise_sigma
    out, seen, _ = ours(sample_euler_ancestral, unet, sch, x, generator=torch.Generator().manual_seed(5))
    final, states = diffusers_loop(unet, sch, x, generator=torch.Generator().manual_seed(5))
    check(out, seen, final, states, vp=False)


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_heun(unet, noise, prediction_type):
    sch = diffusers.HeunDiscreteScheduler(prediction_type=prediction_type, timestep_spacing="trailing")
    sch.set_timesteps(6)
    x = noise * sch.init_noise_sigma
    out, seen, _ = ours(sample_heun, unet, sch, x)
    assert len(sch.timesteps) == 2 * 6 - 1  # diffusers' Heun also makes 2N - 1 calls

    def full_steps(scheduler, state):
        return state if scheduler.state_in_first_order else None  # skip the Euler predictions

    final, states = diffusers_loop(unet, sch, x, keep=full_steps)
    check(out, seen, final, states, vp=False)


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
@pytest.mark.parametrize(("spacing", "offset", "steps"), [("leading", 0, 10), ("leading", 1, 7), ("trailing", 0, 10)])
def test_ddim(unet, noise, prediction_type, spacing, offset, steps):
    sch = diffusers.DDIMScheduler(
        prediction_type=prediction_type,
        timestep_spacing=spacing,
        steps_offset=offset,
        clip_sample=False,
        set_alpha_to_one=True,
    )
    sch.set_timesteps(steps)
    denoiser = denoiser_from_diffusers(unet, sch)
    sigma_0 = float(denoiser.schedule.sigma(sch.timesteps[0]))
    out, seen, _ = ours(sample_ddim, unet, sch, noise * (1 + sigma_0**2) ** 0.5)
    final, states = diffusers_loop(unet, sch, noise, eta=0.0)
    check(out, seen, final, states, vp=True)


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_ddim_eta_one_with_shared_noise(unet, noise, prediction_type):
    sch = diffusers.DDIMScheduler(prediction_type=prediction_type, clip_sample=False, set_alpha_to_one=True)
    sch.set_timesteps(10)
    denoiser = denoiser_from_diffusers(unet, sch)
    sigma_0 = float(denoiser.schedule.sigma(sch.timesteps[0]))
    x = noise * (1 + sigma_0**2) ** 0.5
    out, seen, _ = ours(sample_ddim, unet, sch, x, eta=1.0, generator=torch.Generator().manual_seed(5))
    final, states = diffusers_loop(unet, sch, noise, eta=1.0, generator=torch.Generator().manual_seed(5))
    check(out, seen, final, states, vp=True)


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
@pytest.mark.parametrize(("train_steps", "steps"), [(50, 50), (1000, 20)])
def test_ddpm(unet, noise, prediction_type, train_steps, steps):
    """The full T-step chain (T = 50 here, to stay fast) and a respaced one, with the same noise draws."""
    sch = diffusers.DDPMScheduler(num_train_timesteps=train_steps, prediction_type=prediction_type, clip_sample=False)
    sch.set_timesteps(steps)
    denoiser = denoiser_from_diffusers(unet, sch)
    sigma_0 = float(denoiser.schedule.sigma(sch.timesteps[0]))
    x = noise * (1 + sigma_0**2) ** 0.5
    out, seen, _ = ours(sample_ddpm, unet, sch, x, generator=torch.Generator().manual_seed(3))
    final, states = diffusers_loop(unet, sch, noise, generator=torch.Generator().manual_seed(3))
    check(out, seen, final, states, vp=True)


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
@pytest.mark.parametrize("steps", [1, 2, 8, 20])
def test_dpmpp_2m(unet, noise, prediction_type, steps):
    sch = diffusers.DPMSolverMultistepScheduler(
        prediction_type=prediction_type,
        algorithm_type="dpmsolver++",
        solver_order=2,
        final_sigmas_type="zero",
    )
    sch.set_timesteps(steps)
    x = noise * float(sch.sigmas[0] ** 2 + 1) ** 0.5
    out, seen, sigmas = ours(sample_dpmpp_2m, unet, sch, x)
    torch.testing.assert_close(sigmas, sch.sigmas.double(), rtol=1e-6, atol=0)
    final, states = diffusers_loop(unet, sch, noise)
    check(out, seen, final, states, vp=True)


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
@pytest.mark.parametrize(("solver_type", "steps"), [("midpoint", 8), ("heun", 8), ("midpoint", 2), ("midpoint", 20)])
def test_dpmpp_2m_sde_with_shared_noise(unet, noise, prediction_type, solver_type, steps):
    """DPM++ 2M SDE = diffusers' ``algorithm_type="sde-dpmsolver++"``: one noise tensor per step from the generator
    (diffusers draws one on the last step too, after ours stop), so one generator seeded the same gives the same
    trajectory."""
    sch = diffusers.DPMSolverMultistepScheduler(
        prediction_type=prediction_type,
        algorithm_type="sde-dpmsolver++",
        solver_order=2,
        solver_type=solver_type,
        final_sigmas_type="zero",
    )
    sch.set_timesteps(steps)
    x = noise * float(sch.sigmas[0] ** 2 + 1) ** 0.5
    out, seen, _ = ours(sample_dpmpp_2m_sde, unet, sch, x, solver_type=solver_type,
                        generator=torch.Generator().manual_seed(9))
    final, states = diffusers_loop(unet, sch, noise, generator=torch.Generator().manual_seed(9))
    check(out, seen, final, states, vp=True)


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_dpmpp_3m_ode(unet, noise, prediction_type):
    """DPM++ 3M SDE with eta = 0 is DPM-Solver++(3M)."""
    sch = diffusers.DPMSolverMultistepScheduler(
        prediction_type=prediction_type,
        algorithm_type="dpmsolver++",
        solver_order=3,
        solver_type="heun",
        lower_order_final=False,
        final_sigmas_type="zero",
    )
    sch.set_timesteps(8)
    x = noise * float(sch.sigmas[0] ** 2 + 1) ** 0.5
    out, seen, _ = ours(sample_dpmpp_3m_sde, unet, sch, x, noise=SDENoise(eta=0.0))
    final, states = diffusers_loop(unet, sch, noise)
    check(out, seen, final, states, vp=True)


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
@pytest.mark.parametrize(("order", "variant", "steps"), [(3, "bh2", 8), (2, "bh2", 8), (3, "bh1", 8), (3, "bh2", 2)])
def test_unipc(unet, noise, prediction_type, order, variant, steps):
    sch = diffusers.UniPCMultistepScheduler(
        prediction_type=prediction_type, solver_order=order, solver_type=variant, final_sigmas_type="zero"
    )
    sch.set_timesteps(steps)
    x = noise * float(sch.sigmas[0] ** 2 + 1) ** 0.5
    out, seen, _ = ours(sample_unipc, unet, sch, x, options=UniPCOptions(order=order, variant=variant))

    def corrected(scheduler, state):
        return scheduler.last_sample  # the corrected state at the step's own sigma

    final, states = diffusers_loop(unet, sch, noise, keep=corrected)
    # diffusers 0.42.1: bh1 with final_sigmas_type="zero" returns NaN (B(h) = h = -inf times a zero residual)
    check(out, seen, final, states, vp=True, offset=0, final_is_nan=variant == "bh1")

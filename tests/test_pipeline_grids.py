"""A diffusers pipeline's own grid, reproduced exactly (issue 29): for every spacing diffusers offers (linspace,
leading, trailing, Karras) and every scheduler our samplers map to, the folder loaded by ``load_pipeline_model`` and
sampled on its default grid agrees with diffusers' loop over the folder's scheduler to 1e-4.

Fractional timesteps are the case that used to fail: Euler/Heun ``linspace`` visits t = linspace(0, T-1, N) with sigma
interpolated linearly in sigma (``np.interp``) and feeds the UNet those fractional t; our grid took round(t) and log
interpolation (second sigma 78.793 for diffusers' 78.530 at 15 steps, final images ~1e-2 apart).
"""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffuscope.adapters.pipeline import load_pipeline_model  # noqa: E402
from diffuscope.core.schedules import make_grid  # noqa: E402
from diffuscope.samplers import (  # noqa: E402
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    sample_unipc,
)
from tiny_pipelines import save_ddpm_pipeline  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-4
SPACINGS = {"linspace": {"timestep_spacing": "linspace"}, "leading": {"timestep_spacing": "leading", "steps_offset": 1},
            "trailing": {"timestep_spacing": "trailing"}, "karras": {"use_karras_sigmas": True}}
# scheduler: (class, our sampler, steps, sigma-space start, seeded noise, the spacings its stepping rule follows)
SCHEDULERS = {
    "euler": (diffusers.EulerDiscreteScheduler, sample_euler, 15, True, False, SPACINGS),
    "heun": (diffusers.HeunDiscreteScheduler, sample_heun, 8, True, False, SPACINGS),
    "euler_ancestral": (diffusers.EulerAncestralDiscreteScheduler, sample_euler_ancestral, 8, True, True,
                        ("linspace", "leading", "trailing")),
    "dpmpp_2m": (diffusers.DPMSolverMultistepScheduler, sample_dpmpp_2m, 10, False, False, SPACINGS),
    "unipc": (diffusers.UniPCMultistepScheduler, sample_unipc, 10, False, False, SPACINGS),
    # DDIM and DDPM step to t - T // N whatever the grid: only leading and trailing with N | T are their own grids
    "ddim": (diffusers.DDIMScheduler, sample_ddim, 10, False, False, ("leading", "trailing")),
    "ddpm": (diffusers.DDPMScheduler, sample_ddpm, 20, False, True, ("leading", "trailing")),
}
CASES = [(name, spacing) for name, spec in SCHEDULERS.items() for spacing in spec[5]]
EXTRA = {"ddim": {"clip_sample": False, "set_alpha_to_one": True}, "ddpm": {"clip_sample": False}}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def folder_with(tmp_path, name: str, spacing: str, prediction_type: str = "epsilon"):
    cls = SCHEDULERS[name][0]
    scheduler = cls(prediction_type=prediction_type, **SPACINGS[spacing], **EXTRA.get(name, {}))
    return save_ddpm_pipeline(tmp_path / f"{name}-{spacing}", scheduler=scheduler), scheduler


@torch.no_grad()
def diffusers_loop(unet, scheduler, x, generator=None):
    for t in scheduler.timesteps:
        out = unet(scheduler.scale_model_input(x, t), t).sample
        kwargs = {"generator": generator} if generator is not None else {}
        x = scheduler.step(out, t, x, **kwargs).prev_sample
    return x


def run_both(tmp_path, name, spacing, prediction_type="epsilon"):
    _, fn, steps, sigma_space, seeded, _ = SCHEDULERS[name]
    folder, scheduler = folder_with(tmp_path, name, spacing, prediction_type)
    model = load_pipeline_model(folder)
    grid = make_grid(model.schedule, steps)  # the folder's default grid
    scheduler.set_timesteps(steps)
    noise = torch.randn(2, *model.sample_shape, generator=torch.Generator().manual_seed(1))
    sigma_0 = float(grid.sigmas[0])
    x = noise * (float(scheduler.init_noise_sigma) if sigma_space else (1 + sigma_0**2) ** 0.5)
    kw = {"generator": torch.Generator().manual_seed(5)} if seeded else {}
    with torch.no_grad():
        ours = fn(model.denoiser, x.clone(), grid.sigmas, **kw)
    theirs = diffusers_loop(model.denoiser.net, scheduler, x if sigma_space else noise,
                            torch.Generator().manual_seed(5) if seeded else None)
    return ours, theirs, grid, scheduler


@pytest.mark.parametrize(("name", "spacing"), CASES)
def test_default_grid_sampling_matches_the_folders_scheduler(tmp_path, name, spacing):
    ours, theirs, _, _ = run_both(tmp_path, name, spacing)
    assert torch.isfinite(ours).all()
    assert rel(ours, theirs) < TOL, rel(ours, theirs)


@pytest.mark.parametrize("name", ["euler", "heun"])
def test_fractional_linspace_timesteps_with_v_prediction(tmp_path, name):
    ours, theirs, grid, _ = run_both(tmp_path, name, "linspace", "v_prediction")
    assert rel(ours, theirs) < TOL, rel(ours, theirs)
    assert not bool((grid.timesteps == grid.timesteps.round()).all())  # fractional, as diffusers' own


def test_euler_linspace_grid_is_diffusers_linear_interpolation(tmp_path):
    """The issue's numbers: at 15 steps diffusers' second sigma is 78.530 (linear in sigma at t = 927.43), not the
    78.793 of log interpolation at round(t); the UNet is called at the same fractional t."""
    folder, scheduler = folder_with(tmp_path, "euler", "linspace")
    model = load_pipeline_model(folder)
    grid = make_grid(model.schedule, 15)
    scheduler.set_timesteps(15)
    torch.testing.assert_close(grid.sigmas, scheduler.sigmas.double(), rtol=1e-6, atol=0)
    assert abs(float(grid.sigmas[1]) - 78.530) < 1e-3
    torch.testing.assert_close(grid.timesteps, scheduler.timesteps.double(), rtol=0, atol=1e-4)
    seen = []
    model.denoiser.net.register_forward_pre_hook(lambda _, args: seen.append(float(args[1].reshape(-1)[0])))
    with torch.no_grad():
        model.denoiser(torch.zeros(1, *model.sample_shape), grid.sigmas[1])
    assert abs(seen[0] - float(scheduler.timesteps[1])) < 1e-3, (seen, scheduler.timesteps[1])
    assert grid.describe()["timesteps"][1] == pytest.approx(float(scheduler.timesteps[1]), abs=1e-3)


def test_other_spacings_keep_our_grids(tmp_path):
    """Only the folder's default grid is the scheduler's: another spacing asked for is make_grid's own."""
    folder, _ = folder_with(tmp_path, "euler", "linspace")
    model = load_pipeline_model(folder)
    trailing = make_grid(model.schedule, 10, "trailing")
    assert trailing.timesteps.tolist() == list(range(999, 0, -100))
    from diffuscope.checks.errors import UsageError

    with pytest.raises(UsageError, match="steps"):
        make_grid(model.schedule, 5000)


@pytest.mark.parametrize("skip_prk_steps", [False, True])
def test_pndm_grid_has_one_timestep_per_step(skip_prk_steps):
    """PNDM's Runge-Kutta warm-up visits half steps (timesteps 900, 850, 850, 800, ...): not one timestep per step,
    so the grid is make_grid's leading rule, which PLMS (skip_prk_steps) visits exactly."""
    from diffuscope.adapters.pipeline import denoiser_from_pipeline

    config = {**diffusers.PNDMScheduler(skip_prk_steps=skip_prk_steps, steps_offset=1).config,
              "_class_name": "PNDMScheduler"}
    grid = make_grid(denoiser_from_pipeline(torch.nn.Identity(), config).schedule, 10)
    assert grid.steps == 10 and grid.timesteps.tolist() == list(range(901, 0, -100))

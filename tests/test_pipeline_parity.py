"""Our samplers with guidance on a Stable-Diffusion-layout pipeline, loaded by ``load_pipeline_model``, against the
pipeline's own call (``pipe(prompt, num_inference_steps, guidance_scale, latents=..., output_type="latent")``) with
the matching scheduler, from the same initial latents.

The pipeline starts from ``latents * scheduler.init_noise_sigma``: VP space (1) for DDIM and DPM-Solver, sigma space
for Euler/Heun (sqrt(sigma_max^2 + 1) with leading spacing, sigma_max otherwise); we start from the same state
written in sigma space. DDIM's folder config sets ``set_alpha_to_one=True`` so that its last step lands on sigma = 0
as ours does (Stable Diffusion's own configs say False: diffusers then stops at alpha_bar[0], sigma ~ 0.029, see
docs/diffusers.md). DPM-Solver's ``leading`` grid is its own (step T // (N + 1)), so its case takes the
scheduler's sigmas; DDIM, Euler and Heun run on our default grid for the folder's config, checked equal to the
scheduler's.
"""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffuscope.adapters.diffusers import sigmas_for_timesteps  # noqa: E402
from diffuscope.adapters.pipeline import denoiser_from_pipeline, load_pipeline_model  # noqa: E402
from diffuscope.core.guidance import CFGDenoiser  # noqa: E402
from diffuscope.core.schedules import make_grid  # noqa: E402
from diffuscope.samplers import sample_ddim, sample_dpmpp_2m, sample_euler, sample_heun  # noqa: E402
from tiny_pipelines import load_pipeline, save_text_pipeline  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-4
PROMPT = "a red cat"
GUIDANCE = 3.0
STEPS = 4


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_text_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(scope="module")
def model(folder):
    return load_pipeline_model(folder)


@pytest.fixture(scope="module")
def pipe(folder):
    return load_pipeline(folder)


@pytest.fixture(scope="module")
def latents(model):
    return torch.randn(1, *model.sample_shape, generator=torch.Generator().manual_seed(7))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


CASES = {  # name: (scheduler class, config overrides, our sampler, sigma-space start, grid from the scheduler)
    "ddim": (diffusers.DDIMScheduler, {}, sample_ddim, False, False),
    "euler": (diffusers.EulerDiscreteScheduler, {}, sample_euler, True, False),
    "heun": (diffusers.HeunDiscreteScheduler, {}, sample_heun, True, False),
    "dpmpp_2m": (diffusers.DPMSolverMultistepScheduler, {"final_sigmas_type": "zero"}, sample_dpmpp_2m, False, True),
    "euler_karras": (diffusers.EulerDiscreteScheduler, {"use_karras_sigmas": True, "timestep_spacing": "linspace"},
                     sample_euler, True, False),
    "dpmpp_2m_karras": (diffusers.DPMSolverMultistepScheduler, {"use_karras_sigmas": True, "final_sigmas_type": "zero"},
                        sample_dpmpp_2m, False, True),
}


def run_both(model, pipe, latents, name, prediction_type):
    cls, overrides, fn, sigma_space, scheduler_grid = CASES[name]
    scheduler = cls.from_config(pipe.scheduler.config, prediction_type=prediction_type, **overrides)
    pipe_run = diffusers.StableDiffusionPipeline(**{**pipe.components, "scheduler": scheduler})
    pipe_run.set_progress_bar_config(disable=True)
    expected = pipe_run(PROMPT, num_inference_steps=STEPS, guidance_scale=GUIDANCE, latents=latents.clone(),
                        output_type="latent").images

    denoiser = denoiser_from_pipeline(model.denoiser.net, dict(scheduler.config))
    scheduler.set_timesteps(STEPS)
    if scheduler_grid:
        sigmas = torch.cat([scheduler.sigmas[:-1].double(), torch.zeros(1, dtype=torch.float64)])
    else:
        sigmas = make_grid(denoiser.schedule, STEPS).sigmas  # the folder config's default grid
        theirs = (scheduler.sigmas.double() if name == "euler_karras"
                  else sigmas_for_timesteps(denoiser.schedule, scheduler.timesteps))
        torch.testing.assert_close(sigmas, theirs, rtol=1e-6, atol=0)
    sigma_0 = float(sigmas[0])
    x = latents * (float(scheduler.init_noise_sigma) if sigma_space else (1 + sigma_0**2) ** 0.5)
    guided = CFGDenoiser(denoiser, GUIDANCE, model.conditioner.null(1))
    with torch.no_grad():
        out = fn(guided, x, sigmas, cond=model.conditioner.encode([PROMPT]))
    return out, expected


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("name", list(CASES))
def test_guided_sampler_matches_the_pipeline(model, pipe, latents, name, prediction_type):
    out, expected = run_both(model, pipe, latents, name, prediction_type)
    assert torch.isfinite(out).all()
    assert rel(out, expected) < TOL, rel(out, expected)


def test_default_grid_is_the_folder_schedulers(model, pipe):
    """The loaded folder's DDIM config (leading, steps_offset 1): our default 25-step grid visits its timesteps."""
    scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(25)
    grid = make_grid(model.schedule, 25)
    assert grid.spacing == "leading"
    assert grid.timesteps.tolist() == scheduler.timesteps.tolist()
    assert model.schedule.name == "diffusers"
    torch.testing.assert_close(model.schedule.alpha_bar, scheduler.alphas_cumprod.double())

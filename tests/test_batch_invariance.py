"""Batch-invariant generation (issue 29, reproducibility): with ``GenerationRequest.batch_invariant`` (the default;
core/batch_invariance.py) an image depends on its seed and settings only, bit for bit, whatever batch it was
generated in (a batch of 3 against three batches of 1), for a pixel model (our U-Net, class-conditional, guided) and
a latent one (a tiny Stable-Diffusion-layout pipeline: VAE decode, text conditioning, guided). Without it the
batched images differ by ~1e-6 (CPU kernels pick their blocking by batch size: 1.5e-6 and 8e-7 here), which now and
then moves a pixel by one grey level."""

from __future__ import annotations

import pytest
import torch

from diffuscope.core.batch_invariance import PerImageDenoiser, decode_per_image, per_image
from diffuscope.generation.generate import GenerationRequest, generate
from diffuscope.models.load import load_model

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS = 6


def batch_and_singles(model, prompt: str, guidance: float, **options):
    request = GenerationRequest(prompts=(prompt,), n=3, seed=3, batch_size=3, guidance=guidance, steps=STEPS,
                                **options)
    batch = generate(model, request)
    singles = [generate(model, GenerationRequest(prompts=(prompt,), n=1, seed=3 + i, batch_size=1, guidance=guidance,
                                                 steps=STEPS, **options)) for i in range(3)]
    return batch, singles


def assert_bit_identical(batch, singles):
    for i, one in enumerate(singles):
        for ours, alone in ((batch.samples[i], one.samples[0]), (batch.images[i], one.images[0])):
            assert torch.equal(ours, alone), (i, float((ours - alone).abs().max()))


def test_pixel_model_is_batch_invariant(tiny_model):
    assert_bit_identical(*batch_and_singles(load_model(tiny_model), "7", 2.0))


def test_unguided_batches_too(tiny_model):
    assert_bit_identical(*batch_and_singles(load_model(tiny_model), "3", 1.0, sampler="DPM++ 2M"))


def test_latent_model_is_batch_invariant(tmp_path):
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from tiny_pipelines import save_text_pipeline

    model = load_model(save_text_pipeline(tmp_path / "tiny-sd"))
    assert model.is_latent
    assert_bit_identical(*batch_and_singles(model, "a red cat", 3.0))


def test_per_image_denoiser_and_decoder_are_row_by_row(tiny_model):
    from diffuscope.core.contract import Denoiser

    model = load_model(tiny_model)
    denoiser = per_image(model.denoiser)
    assert per_image(denoiser) is denoiser  # idempotent
    assert isinstance(denoiser, PerImageDenoiser) and isinstance(denoiser, Denoiser)
    assert denoiser.schedule is model.schedule and denoiser.parametrization == model.denoiser.parametrization
    x = torch.randn(4, *model.sample_shape, generator=torch.Generator().manual_seed(0))
    sigmas = torch.tensor([80.0, 3.0, 0.5, 0.01], dtype=torch.float64)
    cond = model.conditioner.encode(["1", "2", "3", "4"])
    with torch.no_grad():
        rows = denoiser(x, sigmas, cond)
        for i in range(4):  # row i is the denoiser on row i alone
            assert torch.equal(rows[i : i + 1], model.denoiser(x[i : i + 1], sigmas[i : i + 1], cond[i]))
        torch.testing.assert_close(rows, model.denoiser(x, sigmas, cond), rtol=1e-5, atol=1e-5)
        guided = per_image(model.guided(2.0))  # a guided image: its cond and uncond rows in one call, as alone
        assert torch.equal(guided(x, 3.0, cond)[2:3], model.guided(2.0)(x[2:3], 3.0, cond[2]))
    assert decode_per_image(model, x) is x  # a pixel model: the identity

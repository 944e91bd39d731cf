"""The CUDA path agrees with the CPU path (marker ``cuda``; skipped without a CUDA device).

    pytest -m cuda                 # on a machine with a GPU (or: python bench/check_cuda.py)

On the shipped model: the denoiser on CUDA equals the CPU one (so whatever it keeps between calls lives on the
device), every sampler's images on CUDA match the CPU's, with guidance everywhere and on an interval, and guidance on
an interval with per-row sigmas (the tensor path) matches too. Tolerance ``TOL``: mean absolute difference in [-1, 1]
units, since the two devices' convolutions round differently (and TF32 is left as PyTorch sets it).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from diffuscope.core.guidance import CFGDenoiser
from diffuscope.generation.generate import GenerationRequest, generate
from diffuscope.io.checkpoint import builtin_models
from diffuscope.models.load import load_model

DEVICE = "cuda"
TOL = 2e-3
SAMPLERS = ("iPNDM", "Heun", "DPM++ 2M", "UniPC", "Euler a", "DDPM")
INTERVAL = (0.28, 5.42)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif("mnist" not in builtin_models(), reason="the shipped mnist model is not installed"),
]


@pytest.fixture(scope="module")
def models():
    return load_model("mnist"), load_model("mnist", device=DEVICE)


def _shape(model) -> tuple[int, int, int]:
    u = model.config.unet
    return u.in_channels, u.image_size, u.image_size


def test_denoiser_on_the_device_matches_the_cpu(models):
    """Twice in a row at the same sigma (a second call may reuse what the first computed) and at per-row sigmas."""
    cpu, gpu = models
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, *_shape(cpu), generator=g) * 2
    cond = torch.tensor([0, 3, 7, 10])
    with torch.inference_mode():
        for sigma in (torch.full((4,), 2.0, dtype=torch.float64), torch.full((4,), 2.0, dtype=torch.float64),
                      torch.tensor([0.2, 1.0, 3.0, 9.0], dtype=torch.float64)):
            ref = cpu.denoiser(x, sigma, cond)
            out = gpu.denoiser(x.to(DEVICE), sigma.to(DEVICE), cond.to(DEVICE))
            assert out.device.type == torch.device(DEVICE).type
            diff = float((ref - out.cpu()).abs().mean())
            assert diff < TOL, diff


@pytest.mark.parametrize("interval", [None, INTERVAL])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sampler_images_match_the_cpu(models, sampler, interval):
    cpu, gpu = models
    labels = torch.arange(10).repeat(7)[:64]
    request = GenerationRequest(prompts=tuple(cpu.class_names[int(c)] for c in labels), sampler=sampler, steps=20,
                                guidance=1.25, guidance_interval=interval, seed=0)
    a = generate(cpu, request).images
    b = generate(gpu, replace(request, device=DEVICE)).images
    diff = (a - b).abs()
    assert float(diff.mean()) < TOL, (float(diff.mean()), float(diff.max()))


def test_guidance_interval_with_per_row_sigmas_matches_the_cpu(models):
    cpu, gpu = models
    sigma = torch.tensor([0.2, 1.0, 3.0, 9.0], dtype=torch.float64)  # rows inside and outside the interval
    cond = torch.tensor([1, 2, 3, 4])
    x = torch.randn(4, *_shape(cpu), generator=torch.Generator().manual_seed(0)) * 2
    with torch.inference_mode():
        ref = CFGDenoiser(cpu.denoiser, 2.0, 10, INTERVAL)(x, sigma, cond)
        out = CFGDenoiser(gpu.denoiser, 2.0, 10, INTERVAL)(x.to(DEVICE), sigma.to(DEVICE), cond.to(DEVICE)).cpu()
    diff = float((ref - out).abs().mean())
    assert diff < TOL, diff

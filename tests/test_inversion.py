"""Inversion on the exact Gaussian denoiser: the ODE run upwards reaches its closed-form solution, and inversion
then generation is the identity up to the discretisation error, which shrinks at the sampler's order."""

import math
from itertools import pairwise
from types import SimpleNamespace

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.core.reference import GaussianDenoiser, GaussianMixtureDenoiser
from diffuscope.core.schedules import karras_sigmas
from diffuscope.samplers.inversion import GREY_LEVEL, invert, regenerate, round_trip

MU, S = 0.3, 0.5


def _grid(steps, smin=0.002, smax=20.0):
    return torch.cat([karras_sigmas(steps, smin, smax), torch.zeros(1, dtype=torch.float64)])


def _images(n=6):
    g = torch.Generator().manual_seed(0)
    return MU + S * torch.randn((n, 1, 5, 5), generator=g, dtype=torch.float64)


def _errors(sampler, steps_list):
    d = GaussianDenoiser(MU, S)
    images = _images()
    inv, rt = [], []
    for steps in steps_list:
        grid = _grid(steps)
        x = invert(d, images, grid, sampler=sampler)
        exact = d.ode_solution(images, float(grid[-2]), float(grid[0]))
        inv.append(float((x - exact).abs().max()))
        rt.append(float(round_trip(d, images, grid, sampler=sampler).rmse.max()))
    return inv, rt


@pytest.mark.parametrize("sampler, order", [("Euler", 1), ("DDIM", 1), ("iPNDM", 2), ("DPM++ 2M", 2)])
def test_inversion_converges_at_the_sampler_order(sampler, order):
    """The inverted state's error to the exact ODE solution at sigma_max falls 2^order-fold per doubling; the round
    trip's error falls too, down to the floor of taking the image as the state at sigma_min (~1e-5 here)."""
    inv, rt = _errors(sampler, [16, 32, 64])
    ratios = [a / b for a, b in pairwise(inv)]
    assert all(2 ** order * 0.75 < r < 2 ** order * 1.5 for r in ratios), (inv, ratios)
    assert rt[0] > rt[1] > rt[2] and rt[2] < (0.04 if order == 1 else 2e-4), rt


def test_ipndm_round_trip_is_within_a_grey_level_where_euler_is_not():
    d = GaussianDenoiser(MU, S)
    images = _images()
    grid = _grid(25)
    assert float(round_trip(d, images, grid, sampler="Euler").rmse_grey.max()) > 1
    assert float(round_trip(d, images, grid, sampler="iPNDM").rmse_grey.max()) < 1
    assert math.isclose(GREY_LEVEL * 127.5, 1.0)


def test_inverted_noise_is_standard_normal_for_data_from_the_model():
    """Images drawn from the model's own distribution invert to noise of std ~1 (and the real distribution of
    noise * sigma_max + ODE transport: x - mu scales by sqrt(s^2 + sigma_max^2) / sqrt(s^2 + sigma_min^2))."""
    d = GaussianDenoiser(MU, S)
    images = MU + S * torch.randn((200, 1, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    noise = round_trip(d, images, _grid(30), sampler="iPNDM").noise
    assert abs(float(noise.std()) - 1.0) < 0.02 and abs(float(noise.mean())) < 0.05


def test_encode_decode_wrap_the_round_trip_and_batches_do_not_matter():
    d = GaussianDenoiser(MU, S)
    images = _images(5)
    grid = _grid(10)
    plain = round_trip(d, images, grid, sampler="iPNDM", batch_size=2)
    assert torch.allclose(plain.images, round_trip(d, images, grid, sampler="iPNDM", batch_size=5).images)
    affine = SimpleNamespace(encode=lambda x: x * 2 - MU, decode=lambda z: (z + MU) / 2)  # a codec
    wrapped = round_trip(d, images, grid, sampler="iPNDM", codec=affine)
    assert wrapped.images.shape == images.shape
    x = invert(d, images, grid, sampler="iPNDM")
    assert torch.allclose(regenerate(d, x, grid, sampler="iPNDM"), plain.images)


def test_samplers_without_an_upward_step_are_refused():
    with pytest.raises(UsageError, match=r"no one-step form.*valid: Euler, DDIM"):
        invert(GaussianDenoiser(MU, S), _images(), _grid(5), sampler="Heun")


def test_a_latent_models_inversion_is_saved_as_pictures_of_the_image_size(tmp_path):
    """The shipped emoji model: 4x16x16 latents for 3x32x32 images; noise.png shows the first 3 latent channels
    enlarged to the image's size, side_by_side.png holds three image-sized panels."""
    import json

    from PIL import Image

    from diffuscope.data import load_dataset
    from diffuscope.generation.generate import GenerationRequest
    from diffuscope.io.checkpoint import builtin_models
    from diffuscope.lesson.inversion_report import OUTPUTS, invert_image, reachability, save_inversion
    from diffuscope.models.load import load_model

    if "emoji" not in builtin_models():
        pytest.skip("the shipped emoji model is not installed")
    model = load_model("emoji")
    test = load_dataset(model.data_name, split="test", image_size=32, channels=3)
    prompt = test.class_names[int(test.labels[0])]
    result = invert_image(model, test.images[:1], GenerationRequest(prompts=(prompt,), steps=4))
    assert result.trip.noise.shape == (1, 4, 16, 16) and result.trip.images.shape == (1, 3, 32, 32)
    paths = save_inversion(result, tmp_path, model="emoji")
    assert [p.name for p in paths] == list(OUTPUTS) and all(p.is_file() for p in paths)
    sizes = {name: Image.open(tmp_path / name).size for name in ("original.png", "noise.png", "regenerated.png")}
    assert len(set(sizes.values())) == 1, sizes
    w, h = sizes["original.png"]
    side = Image.open(tmp_path / "side_by_side.png").size
    assert side[0] >= 3 * w and side[1] >= h
    saved = json.loads((tmp_path / "invert.json").read_text())
    assert saved["model"] == "emoji" and saved["prompt"] == prompt and saved["nfe"] == 7
    assert saved["reachability"] == reachability(result)
    assert saved["rmse_grey_levels"] == pytest.approx(float(result.trip.rmse_grey[0]))
    # a latent model is judged against what its autoencoder alone gives back: decode(encode(image))
    codec = model.decode(model.encode(test.images[:1])).float()
    alone = float((codec - test.images[:1]).pow(2).mean().sqrt()) * 127.5
    assert saved["codec_rmse_grey_levels"] == pytest.approx(alone, rel=1e-4)
    assert saved["rmse_to_codec_grey_levels"] == pytest.approx(
        float((result.trip.images.float() - codec).pow(2).mean().sqrt()) * 127.5, rel=1e-4)
    assert "of the autoencoder's own reconstruction" in saved["reachability"]


def _classes():
    """Two classes 2 apart (class-conditional exact mixture) and five images with mixed labels."""
    d = GaussianMixtureDenoiser(torch.tensor([[[[-1.0]]], [[[1.0]]]], dtype=torch.float64).expand(2, 1, 3, 3),
                                0.3, classes=torch.tensor([0, 1]))
    labels = torch.tensor([0, 1, 1, 0, 1])
    images = (labels.double() * 2 - 1).reshape(-1, 1, 1, 1) + 0.3 * torch.randn(
        (5, 1, 3, 3), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return d, labels, images


def test_conditions_follow_their_images_through_batches():
    """Each image is inverted and regenerated under its own label, whatever the batch size: the same as doing it
    one image at a time, and not what the unconditional (or another label's) ODE gives."""
    d, labels, images = _classes()
    grid = _grid(12)
    x = invert(d, images, grid, cond=labels, batch_size=2)
    one = torch.cat([invert(d, images[i:i + 1], grid, cond=labels[i:i + 1]) for i in range(5)])
    assert torch.allclose(x, one, atol=1e-12)
    assert not torch.allclose(x, invert(d, images, grid, batch_size=2), atol=1e-3)
    back = regenerate(d, x, grid, cond=labels, batch_size=2)
    assert torch.allclose(back, torch.cat([regenerate(d, x[i:i + 1], grid, cond=labels[i:i + 1])
                                           for i in range(5)]), atol=1e-12)
    assert float((back - images).abs().max()) < 0.05  # a reconstruction
    assert not torch.allclose(back, regenerate(d, x, grid, batch_size=2), atol=1e-3)


def test_round_trip_inverts_under_cond_and_regenerates_under_regen_cond():
    d, labels, images = _classes()
    grid = _grid(12)
    x = invert(d, images, grid, cond=labels)
    trip = round_trip(d, images, grid, cond=labels, batch_size=2)
    assert torch.equal(trip.noise, x / float(grid[0]))
    assert torch.equal(trip.images, regenerate(d, x, grid, cond=labels))  # regen_cond=None: the same labels
    flipped = 1 - labels
    edit = round_trip(d, images, grid, cond=labels, regen_cond=flipped, batch_size=2)
    assert torch.equal(edit.noise, trip.noise)
    assert torch.equal(edit.images, regenerate(d, x, grid, cond=flipped))
    # the simplest edit: each image lands in the other class (its mean crosses zero)
    assert torch.equal(edit.images.mean((1, 2, 3)) > 0, flipped.bool())
    assert torch.allclose(edit.rmse.double(), ((edit.images - images) ** 2).flatten(1).mean(1).sqrt(), atol=1e-6)


def test_the_default_sampler_is_ipndm_and_a_float64_denoiser_keeps_x_in_its_dtype():
    d = GaussianDenoiser(MU, S)
    images = _images(3)
    grid = _grid(8)
    assert torch.equal(invert(d, images, grid), invert(d, images, grid, sampler="iPNDM"))
    assert torch.equal(regenerate(d, images, grid), regenerate(d, images, grid, sampler="iPNDM"))
    assert not torch.equal(invert(d, images, grid), invert(d, images, grid, sampler="Euler"))

    def wide(x, sigma, cond=None):  # a denoiser that answers in float64 whatever x is
        assert sigma.dtype == torch.float64 and sigma.shape == (len(x),)
        return d(x.double(), sigma)

    x = invert(wide, images.float(), grid)
    assert x.dtype == torch.float32
    assert torch.allclose(x.double(), invert(d, images, grid), atol=1e-3)

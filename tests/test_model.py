"""DiffusionModel (core/model.py), the one object every consumer asks, on an exact class-conditional mixture:
guidance computed by hand, codec round trips, what it reports about itself."""

from types import SimpleNamespace

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.core.conditioning import ClassCond, ClassConditioner, NoConditioner
from diffuscope.core.model import DiffusionModel
from diffuscope.core.reference import GaussianMixtureDenoiser
from diffuscope.core.schedules import EDMSchedule

F64 = torch.float64


def _model(**kw):
    means = torch.stack([torch.full((1, 2, 2), -1.0, dtype=F64), torch.full((1, 2, 2), 1.0, dtype=F64)])
    den = GaussianMixtureDenoiser(means, 0.4)
    den.schedule = EDMSchedule()
    return DiffusionModel(den, ClassConditioner(("a", "b")), (1, 2, 2), **kw)


X = torch.tensor([[[[0.3, -0.2], [0.1, 0.5]]], [[[-0.4, 0.2], [0.0, 0.9]]]], dtype=F64)


def test_guidance_is_uncond_plus_scale_times_the_difference():
    """Ho & Salimans 2022, Eq. 6 with the null class as the unconditional model."""
    model = _model()
    assert model.guided(1) is model.denoiser and model.guided(1.0, (0.5, 5.0)) is model.denoiser
    cond = ClassCond(torch.tensor([0, 1]))
    sigma = torch.tensor([1.0, 1.0], dtype=F64)
    d = model.denoiser
    uncond = d(X, sigma, torch.tensor([2, 2]))  # class 2 = the null class
    conditional = d(X, sigma, cond)
    assert not torch.allclose(uncond, conditional)
    expected = uncond + 3.0 * (conditional - uncond)
    assert torch.allclose(model.guided(3.0)(X, sigma, cond), expected, atol=1e-12)
    zero = model.guided(0)(X, sigma, cond)  # scale 0: the unconditional model
    assert torch.allclose(zero, uncond, atol=1e-12)


def test_the_guidance_interval_guides_only_inside_it():
    model = _model()
    guided = model.guided(3.0, (0.5, 5.0))
    cond = ClassCond(torch.tensor([0, 1]))
    d = model.denoiser
    for s, inside in ((0.5, False), (0.6, True), (5.0, True), (8.0, False)):
        sigma = torch.full((2,), s, dtype=F64)
        uncond, conditional = d(X, sigma, torch.tensor([2, 2])), d(X, sigma, cond)
        expected = uncond + 3.0 * (conditional - uncond) if inside else conditional
        assert torch.allclose(guided(X, sigma, cond), expected, atol=1e-12), s


def test_guidance_refusals():
    plain = DiffusionModel.bare(lambda x, sigma, cond=None: x * 0, EDMSchedule(), (1, 2, 2))
    with pytest.raises(UsageError) as e:
        plain.guided(2.0)
    assert str(e.value) == ("this model has no null condition (an unconditional model or no empty prompt): "
                            "guidance must be 1")
    assert plain.guided(1.0) is plain.denoiser
    with pytest.raises(UsageError, match="finite number >= 0"):
        _model().guided(-1.0)


def test_bare_wraps_any_denoiser_with_its_schedule():
    seen = []

    def den(x, sigma, cond=None):
        seen.append(cond)
        return x * 2

    schedule = EDMSchedule(0.01, 10.0)
    m = DiffusionModel.bare(den, schedule, [1, 2, 2])
    assert m.schedule is schedule and m.sample_shape == (1, 2, 2) and isinstance(m.conditioner, NoConditioner)
    assert torch.equal(m.denoiser(X, 1.0, "c"), X * 2) and seen == ["c"]
    labelled = DiffusionModel.bare(den, schedule, (1, 2, 2), ClassConditioner(("x", "y")))
    assert labelled.class_names == ("x", "y") and m.class_names == ()


def test_a_latent_model_decodes_and_encodes_through_its_codec():
    codec = SimpleNamespace(image_shape=(3, 8, 8), latent_shape=(1, 2, 2),
                            encode=lambda images: images * 2 - 1, decode=lambda z: (z + 1) / 2)
    latent = _model(codec=codec)
    assert latent.is_latent and latent.image_shape == (3, 8, 8) and latent.sample_shape == (1, 2, 2)
    assert torch.equal(latent.decode(X), (X + 1) / 2) and torch.equal(latent.encode(X), X * 2 - 1)
    pixel = _model()
    assert not pixel.is_latent and pixel.image_shape == (1, 2, 2)
    assert pixel.decode(X) is X and pixel.encode(X) is X
    assert pixel.schedule is pixel.denoiser.schedule


def test_what_a_model_says_about_its_data_and_prompts():
    m = _model(run_config={"data": {"name": "digits"}})
    assert m.data_name == "digits" and m.class_names == ("a", "b") and m.trained_prompts() == ("a", "b")
    assert _model().data_name is None and _model(run_config={"data": None}).data_name is None
    text = SimpleNamespace(has_text=True)
    assert DiffusionModel(None, text, (1, 2, 2)).trained_prompts() == ()  # no data set of its own
    gone = DiffusionModel(None, text, (1, 2, 2), run_config={"data": {"name": "/no/such/folder"}})
    assert gone.trained_prompts() == ()  # its data set is not on this machine
    digits = DiffusionModel(None, text, (1, 2, 2), run_config={"data": {"name": "digits"}})
    assert digits.trained_prompts() == tuple(str(i) for i in range(10))
    assert (m.name, m.path, m.step, m.config, m.codec) == ("model", None, 0, None, None)

"""Classifier-free guidance as a denoiser wrapper, checked on the exact class-conditional mixture denoiser."""

from __future__ import annotations

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.core.conditioning import ClassCond, TextCond
from diffuscope.core.guidance import CFGDenoiser
from diffuscope.core.reference import GaussianMixtureDenoiser
from diffuscope.core.schedules import EDMSchedule, make_grid
from diffuscope.samplers import CountingDenoiser, get_sampler, initial_noise, make_generators

NULL = 2  # the null class index (num_classes) of the two-class mixture


class Recorder:
    """Counts calls and records each call's batch size and conditions."""

    def __init__(self, denoiser):
        self.denoiser = denoiser
        self.calls: list[tuple[int, torch.Tensor | None]] = []

    def __call__(self, x, sigma, cond=None):
        assert len(sigma) == len(x)
        self.calls.append((len(x), None if cond is None else getattr(cond, "labels", cond).clone()))
        return self.denoiser(x, sigma, cond)


@pytest.fixture
def mixture():
    means = torch.stack([torch.full((1, 3, 3), -1.0), torch.full((1, 3, 3), 1.0)])
    return GaussianMixtureDenoiser(means, 0.3)


def _inputs(b=4):
    x = torch.randn(b, 1, 3, 3, generator=torch.Generator().manual_seed(0)) * 2
    return x, torch.full((b,), 2.0, dtype=torch.float64), torch.tensor([0, 1, 1, 0][:b])


def test_scale_one_is_the_conditional_denoiser_in_one_call(mixture):
    x, sigma, cond = _inputs()
    rec = Recorder(mixture)
    out = CFGDenoiser(rec, 1.0, NULL)(x, sigma, cond)
    torch.testing.assert_close(out, mixture(x, sigma, cond))
    assert len(rec.calls) == 1 and rec.calls[0][0] == 4
    assert torch.equal(rec.calls[0][1], cond)


@pytest.mark.parametrize("scale", [0.5, 2.0, 7.5])
def test_scale_matches_the_formula_in_one_batched_call(mixture, scale):
    x, sigma, cond = _inputs()
    rec = Recorder(mixture)
    out = CFGDenoiser(rec, scale, torch.tensor(NULL))(x, sigma, cond)
    d_c = mixture(x, sigma, cond)
    d_u = mixture(x, sigma, torch.full((4,), NULL))
    torch.testing.assert_close(out, d_u + scale * (d_c - d_u), rtol=1e-5, atol=1e-5)
    assert len(rec.calls) == 1 and rec.calls[0][0] == 8
    assert rec.calls[0][1].tolist() == [0, 1, 1, 0, NULL, NULL, NULL, NULL]
    assert rec.calls[0][1].dtype == torch.long


def test_scale_zero_and_no_cond_are_single_calls(mixture):
    x, sigma, cond = _inputs()
    rec = Recorder(mixture)
    guided = CFGDenoiser(rec, 0.0, NULL)
    torch.testing.assert_close(guided(x, sigma, cond), mixture(x, sigma, torch.full((4,), NULL)))
    torch.testing.assert_close(guided(x, sigma, None), mixture(x, sigma, None))
    assert [c[0] for c in rec.calls] == [4, 4]


def test_per_row_uncond_tensor_and_scalar_sigma(mixture):
    """A per-row null condition and a 0-d sigma: one batched call, and the result is the guidance formula (not the
    conditional output) row by row."""
    x, _, cond = _inputs()
    rec = Recorder(mixture)
    sigma = torch.tensor(2.0, dtype=torch.float64)
    out = CFGDenoiser(rec, 3.0, torch.full((4,), NULL))(x, sigma, cond)
    assert out.shape == x.shape and len(rec.calls) == 1 and rec.calls[0][0] == 8
    d_c, d_u = mixture(x, sigma, cond), mixture(x, sigma, torch.full((4,), NULL))
    torch.testing.assert_close(out, d_u + 3.0 * (d_c - d_u), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, d_c)


def test_a_cond_of_one_row_is_expanded_and_typed_conds_are_batched_together(mixture):
    """Guidance never looks inside a condition: ClassCond rows and a one-row null are concatenated with Cond.cat."""
    x, sigma, cond = _inputs()
    seen = []
    guided = CFGDenoiser(lambda x, s, c: seen.append(c) or mixture(x, s, c), 2.0, ClassCond(torch.tensor([NULL])))
    out = guided(x, sigma, ClassCond(cond))
    assert isinstance(seen[0], ClassCond) and seen[0].labels.tolist() == [0, 1, 1, 0] + [NULL] * 4
    torch.testing.assert_close(out, CFGDenoiser(mixture, 2.0, NULL)(x, sigma, cond), rtol=0, atol=0)


def test_text_conditions_are_guided_like_class_conditions():
    """A text denoiser's conditional and null halves travel in one call as one TextCond of 2B rows."""
    tokens = torch.randn(2, 3, 4)
    cond = TextCond(tokens, torch.ones(2, 3, dtype=torch.bool), tokens.mean(1))
    null = TextCond(torch.zeros(1, 3, 4), torch.ones(1, 3, dtype=torch.bool), torch.zeros(1, 4))
    calls = []

    def denoiser(x, sigma, c):  # the prediction moves with the pooled text vector
        calls.append(len(c))
        return x * 0 + c.pooled.sum(1).reshape(-1, 1, 1, 1)

    x = torch.zeros(2, 1, 2, 2)
    out = CFGDenoiser(denoiser, 3.0, null)(x, torch.ones(2, dtype=torch.float64), cond)
    assert calls == [4]
    torch.testing.assert_close(out[:, 0, 0, 0], 3.0 * cond.pooled.sum(1))


@pytest.mark.parametrize("scale", [-0.5, float("nan"), float("inf"), 1e300 * 1e10, "abc"])
def test_negative_or_non_finite_scale_rejected(mixture, scale):
    with pytest.raises(UsageError, match="guidance scale"):
        CFGDenoiser(mixture, scale, NULL)


@pytest.mark.parametrize("name", ["Euler", "Heun", "DPM++ 2M"])
def test_one_call_per_evaluation_while_sampling(mixture, name):
    """NFE with guidance equals the sampler's NFE (cond + uncond share each call), every call of batch 2B."""
    spec = get_sampler(name)
    sigmas = make_grid(EDMSchedule(0.01, 20.0), 6).sigmas
    counter = CountingDenoiser(mixture)
    x = initial_noise((3, 1, 3, 3), make_generators(0, 3), sigmas[0])
    cond = torch.tensor([1, 1, 1])
    out = spec.fn(CFGDenoiser(counter, 3.0, NULL), x, sigmas, cond=cond)
    assert counter.nfe == spec.nfe(6) and set(counter.batch_sizes) == {6}
    null = torch.full((3,), NULL)

    def by_hand(x, sigma, c):  # Ho & Salimans 2022, Eq. 6, two separate calls
        d_u = mixture(x, sigma, null)
        return d_u + 3.0 * (mixture(x, sigma, c) - d_u)

    torch.testing.assert_close(out, spec.fn(by_hand, x, sigmas, cond=cond), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, spec.fn(mixture, x, sigmas, cond=cond), atol=1e-2)  # guidance did something


def test_interval_guides_inside_and_is_one_conditional_call_outside(mixture):
    """Kynkaanniemi et al. 2024: guided where lo < sigma <= hi; elsewhere the plain conditional D in one B call."""
    x, _, cond = _inputs()
    full = CFGDenoiser(mixture, 3.0, NULL)
    for sigma, inside in [(0.5, False), (1.0, True), (2.0, True), (3.0, False), (10.0, False)]:
        rec = Recorder(mixture)
        limited = CFGDenoiser(rec, 3.0, NULL, interval=(0.5, 2.0))  # sigma = 0.5 is outside, 2.0 inside
        per_row = torch.full((4,), sigma, dtype=torch.float64)
        expected = full(x, per_row, cond) if inside else mixture(x, per_row, cond)
        for s in (torch.tensor(sigma, dtype=torch.float64).expand(4), per_row):
            torch.testing.assert_close(limited(x, s, cond), expected, rtol=0, atol=0)
        assert [c[0] for c in rec.calls] == [8 if inside else 4] * 2, sigma
        zero_d = CFGDenoiser(mixture, 3.0, NULL, interval=(0.5, 2.0))(x, torch.tensor(sigma, dtype=torch.float64), cond)
        torch.testing.assert_close(zero_d, expected, rtol=0, atol=0)


def test_interval_with_mixed_rows_guides_row_by_row(mixture):
    x, _, cond = _inputs()
    sigma = torch.tensor([0.3, 1.0, 1.5, 4.0], dtype=torch.float64)
    out = CFGDenoiser(mixture, 2.5, NULL, interval=(0.5, 2.0))(x, sigma, cond)
    guided = CFGDenoiser(mixture, 2.5, NULL)(x, sigma, cond)
    plain = mixture(x, sigma, cond)
    inside = torch.tensor([False, True, True, False])
    torch.testing.assert_close(out[inside], guided[inside])
    torch.testing.assert_close(out[~inside], plain[~inside])


@pytest.mark.parametrize("interval", [(2.0, 1.0), (1.0, 1.0), (-0.1, 1.0), (float("nan"), 1.0), (1.0,), "ab"])
def test_bad_interval_rejected(mixture, interval):
    with pytest.raises(UsageError, match="guidance interval"):
        CFGDenoiser(mixture, 2.0, NULL, interval=interval)


def test_interval_while_sampling_doubles_the_batch_only_inside(mixture):
    sigmas = make_grid(EDMSchedule(0.01, 20.0), 8).sigmas
    counter = CountingDenoiser(mixture)
    x = initial_noise((3, 1, 3, 3), make_generators(0, 3), sigmas[0])
    get_sampler("Euler").fn(CFGDenoiser(counter, 3.0, NULL, interval=(0.28, 5.42)), x, sigmas,
                            cond=torch.tensor([1, 1, 1]))
    expected = [6 if 0.28 < s <= 5.42 else 3 for s in sigmas[:-1].tolist()]
    assert counter.batch_sizes == expected and 3 in expected and 6 in expected


def test_the_model_guides_and_conditions_in_one_place():
    """DiffusionModel.guided is the CFG wrapper (the plain denoiser at 1, refused without a null condition);
    Conditioner.conditions gives n rows round-robin, and the null condition for prompts=None."""
    from diffuscope.core.conditioning import ClassConditioner, NoConditioner
    from diffuscope.core.model import DiffusionModel

    gmm = GaussianMixtureDenoiser(torch.randn(3, 1, 4, 4), 0.3, classes=torch.arange(3))
    model = DiffusionModel.bare(gmm, EDMSchedule(), (1, 4, 4), ClassConditioner(("a", "b", "c")))
    assert model.guided(1.0) is model.denoiser
    guided = model.guided(2.0, (0.5, 5.0))
    assert isinstance(guided, CFGDenoiser) and guided.interval == (0.5, 5.0)
    x, sigma = torch.randn(2, 1, 4, 4), torch.full((2,), 1.0, dtype=torch.float64)
    cond = model.conditioner.conditions(("a", "c"), 2)
    torch.testing.assert_close(guided(x, sigma, cond), CFGDenoiser(model.denoiser, 2.0, 3, (0.5, 5.0))(x, sigma, cond))
    assert model.conditioner.conditions(("a", "c"), 5).labels.tolist() == [0, 2, 0, 2, 0]
    assert model.conditioner.conditions(None, 3).labels.tolist() == [3, 3, 3]  # the null class, as the page does
    plain = DiffusionModel.bare(gmm, EDMSchedule(), (1, 4, 4))
    assert plain.conditioner.conditions(None, 2) is None and plain.guided(1.0) is plain.denoiser
    with pytest.raises(UsageError, match="null condition"):
        plain.guided(2.0)
    with pytest.raises(UsageError, match="unconditional"):
        NoConditioner().conditions(("a",), 2)
    with pytest.raises(UsageError, match="number of images"):
        NoConditioner().conditions(None)


def test_scale_zero_calls_with_the_null_condition_itself(mixture):
    """Scale 0 is the unconditional model: the null class is handed over (not None, which a model may read
    otherwise), one row per image."""
    x, sigma, cond = _inputs()
    rec = Recorder(mixture)
    CFGDenoiser(rec, 0.0, NULL)(x, sigma, cond)
    assert rec.calls[0][1].tolist() == [NULL] * 4


def test_scale_two_keeps_to_its_interval(mixture):
    x, sigma, cond = _inputs()
    guided = CFGDenoiser(mixture, 2.0, NULL, (0.5, 1.0))  # sigma 2 is outside: the conditional model
    torch.testing.assert_close(guided(x, sigma, cond), mixture(x, sigma, cond))


def test_interval_and_scale_lines_and_repr(mixture):
    from diffuscope.core.guidance import check_interval, check_scale

    assert check_interval((0, 5)) == (0.0, 5.0)  # LO = 0: guided down to the last nonzero sigma
    assert check_interval(("0.5", "inf")) == (0.5, float("inf"))
    with pytest.raises(UsageError) as e:
        check_interval("ab")
    assert str(e.value) == "guidance interval must be two noise levels LO,HI, got 'ab'"
    with pytest.raises(UsageError) as e:
        check_scale("x")
    assert str(e.value) == "guidance scale must be a number >= 0 (1 = off), got 'x'"
    assert repr(CFGDenoiser(mixture, 2.0, NULL)) == "CFGDenoiser(scale=2.0, uncond=ClassCond)"
    assert repr(CFGDenoiser(mixture, 2.0, NULL, (0.5, 5))) == (
        "CFGDenoiser(scale=2.0, uncond=ClassCond, interval=(0.5, 5.0))")

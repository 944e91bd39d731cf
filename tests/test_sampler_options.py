"""The samplers' paper knobs (Churn, SDENoise, UniPCOptions) against exact references: S_churn step by step
(Karras et al. 2022, Algorithm 2), DDPM's s_noise, UniPC's variants and refusals, and the flat
GenerationRequest.sampler_options grouped into each sampler's option object. The contract every sampler keeps:
test_samplers.py."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.core.reference import GaussianDenoiser
from diffuscope.core.schedules import EDMSchedule
from diffuscope.samplers import (
    Churn,
    SDENoise,
    UniPCOptions,
    get_sampler,
    initial_noise,
    make_generators,
    sample_ddim,
    sample_ddpm,
    sample_heun,
    sample_unipc,
)
from sampler_helpers import GAUSS, grid, run, start


def test_ddpm_passes_s_noise():
    sigmas = grid(6)
    x = start(sigmas)
    a = sample_ddpm(GAUSS, x, sigmas, generator=make_generators(4, 4), s_noise=0.5)
    b = sample_ddim(GAUSS, x, sigmas, generator=make_generators(4, 4), eta=1.0, s_noise=0.5)
    assert torch.equal(a, b) and not torch.equal(a, sample_ddpm(GAUSS, x, sigmas, generator=make_generators(4, 4)))


def test_unipc_variants_differ_by_b_of_h():
    """B(h) = h (bh1) or e^h - 1 (bh2) in the data-prediction form's exponent -h (Zhao et al. 2023, Sec. 3.2):
    two different solvers of the same order (the bh1 case of test_observed_order)."""
    from diffuscope.samplers.unipc import unipc_rhos

    for h in (0.1, 0.7):
        assert unipc_rhos(h, [-1.0, 1.0], 2, "bh1", corrector=True)[0] == pytest.approx(-h, rel=1e-12)
        assert unipc_rhos(h, [-1.0, 1.0], 2, "bh2", corrector=True)[0] == pytest.approx(math.expm1(-h), rel=1e-12)
    sigmas = grid(8)
    x = start(sigmas, dtype=torch.float64)
    bh1, bh2 = (sample_unipc(GAUSS, x, sigmas, options=UniPCOptions(variant=v)) for v in ("bh1", "bh2"))
    assert float((bh1 - bh2).abs().max()) > 1e-6


def test_unipc_rejects_bad_options():
    with pytest.raises(UsageError, match="unknown UniPC variant 'bh3'"):
        UniPCOptions(variant="bh3")
    with pytest.raises(UsageError, match="UniPC order must be 1, 2 or 3, got 4"):
        UniPCOptions(order=4)
    with pytest.raises(UsageError, match=r"eta must be >= 0, got -1\.0"):
        SDENoise(eta=-1.0)
    with pytest.raises(UsageError, match="unknown UniPC variant"):
        get_sampler("UniPC").keywords({"variant": "bh3"})


def test_flat_options_become_the_samplers_option_objects():
    """GenerationRequest.sampler_options stay flat (the paper's names); the registry groups them into the sampler's
    option object, keeps its own keywords, and refuses unknown names in one line naming the valid ones."""
    assert get_sampler("heun").keywords({"s_churn": 0.3, "s_noise": 0.7}) == {
        "churn": Churn(s_churn=0.3, s_noise=0.7)}
    assert get_sampler("dpmpp_2m_sde").keywords({"eta": 0.5, "solver_type": "heun"}) == {
        "noise": SDENoise(eta=0.5), "solver_type": "heun"}
    assert get_sampler("dpmpp_3m_sde").keywords({"d2_scale": 2.0}) == {"d2_scale": 2.0}
    assert get_sampler("uni_pc").keywords({"order": 3, "use_corrector": False}) == {
        "options": UniPCOptions(order=3, use_corrector=False)}
    assert get_sampler("ddim").keywords({"eta": 1.0}) == {"eta": 1.0}
    assert get_sampler("euler").keywords(None) == {}
    with pytest.raises(UsageError, match=r"^unknown option 'eta' for sampler Euler \(valid: s_churn, s_tmin, s_tmax, "
                                         r"s_noise\)$"):
        get_sampler("euler").keywords({"eta": 1.0})
    with pytest.raises(UsageError, match=r"unknown options 'noise', 'x' for sampler DPM\+\+ 2M SDE \(valid: eta, "
                                         r"s_noise, solver_type\)"):
        get_sampler("dpmpp_2m_sde").keywords({"noise": SDENoise(), "x": 1})
    sigmas = grid(4)
    x = start(sigmas)
    flat = run("heun", x, sigmas, seed=3, s_churn=0.5, s_noise=0.7)
    grouped = sample_heun(GAUSS, x, sigmas, generator=make_generators(3, 4), churn=Churn(s_churn=0.5, s_noise=0.7))
    assert torch.equal(flat, grouped)


# --- s_churn (Karras et al. 2022, Algorithm 2, lines 4-6), checked step by step -------------------------------------


def _churn_reference(x, sigmas, seed, s_churn, s_noise, heun):
    """Algorithm 2 with churn on the first step only (s_tmin = sigmas[0]), written out from the paper: gamma =
    min(S_churn / N, sqrt(2) - 1), sigma_hat = sigma (1 + gamma), x_hat = x + sqrt(sigma_hat^2 - sigma^2) S_noise eps,
    then one Euler (or Heun) step from sigma_hat to sigma_1, then the step to 0 lands on D(x_1, sigma_1)."""
    n = len(sigmas) - 1
    sigma, sigma_1 = float(sigmas[0]), float(sigmas[1])
    gamma = min(s_churn / n, 2**0.5 - 1)
    sigma_hat = sigma * (1 + gamma)
    eps = torch.stack([torch.randn(x.shape[1:], generator=g) for g in make_generators(seed, len(x))]).to(x.dtype)
    x_hat = x + eps * (s_noise * math.sqrt(sigma_hat**2 - sigma**2))
    d = (x_hat - GAUSS(x_hat, sigma_hat)) / sigma_hat
    x_1 = x_hat + (sigma_1 - sigma_hat) * d
    if heun:
        d_2 = (x_1 - GAUSS(x_1, sigma_1)) / sigma_1
        x_1 = x_hat + (sigma_1 - sigma_hat) * (d + d_2) / 2
    return GAUSS(x_1, sigma_1)


@pytest.mark.parametrize("sampler_id", ["euler", "heun"])
@pytest.mark.parametrize(("s_churn", "s_noise"), [(0.3, 1.0), (0.3, 0.7), (80.0, 1.0)])  # 80: gamma capped
def test_churn_adds_the_algorithm_2_noise(sampler_id, s_churn, s_noise):
    sigmas = torch.tensor([4.0, 1.5, 0.0], dtype=torch.float64)
    x = start(sigmas, dtype=torch.float64)
    out = run(sampler_id, x, sigmas, seed=7, s_churn=s_churn, s_noise=s_noise, s_tmin=4.0)
    expected = _churn_reference(x, sigmas, 7, s_churn, s_noise, heun=sampler_id == "heun")
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    # the noise is the generator's: another seed, another result; no churn, no dependence on the seed
    assert (run(sampler_id, x, sigmas, seed=8, s_churn=s_churn, s_tmin=4.0) - out).abs().max() > 1e-3
    assert torch.equal(run(sampler_id, x, sigmas, seed=7), run(sampler_id, x, sigmas, seed=8))


@pytest.mark.parametrize("sampler_id", ["euler", "heun"])
def test_churn_respects_s_tmin_s_tmax(sampler_id):
    """Churn applies only where s_tmin <= sigma <= s_tmax: outside that window the run is the plain ODE one."""
    sigmas = torch.tensor([4.0, 1.5, 0.0], dtype=torch.float64)
    x = start(sigmas, dtype=torch.float64)
    plain = run(sampler_id, x, sigmas, seed=7)
    for window in ({"s_tmin": 4.5}, {"s_tmin": 1.6, "s_tmax": 3.9}, {"s_tmin": 1.0, "s_tmax": 1.4}):
        assert torch.equal(run(sampler_id, x, sigmas, seed=7, s_churn=0.5, **window), plain), window
    for window in ({"s_tmin": 4.0}, {"s_tmax": 4.0}, {"s_tmin": 1.5, "s_tmax": 1.5}):  # boundaries included
        assert not torch.equal(run(sampler_id, x, sigmas, seed=7, s_churn=0.5, **window), plain), window


def test_generation_requests_take_flat_sampler_options():
    """GenerationRequest.sampler_options reach the sampler through SamplerSpec.keywords: {"s_churn": 0.5, "s_noise":
    0.7} gives what sample_heun gives with Churn(0.5, s_noise=0.7); an unknown name is refused before any work."""
    from diffuscope.core.model import DiffusionModel
    from diffuscope.generation.generate import GenerationRequest, generate

    model = DiffusionModel.bare(GaussianDenoiser(mu=torch.zeros(1, 4, 4), s=0.5), EDMSchedule(0.002, 80.0), (1, 4, 4))
    request = GenerationRequest(n=3, sampler="Heun", steps=5, seed=11, sampler_options={"s_churn": 0.5, "s_noise": 0.7})
    gen = generate(model, request)
    sigmas = gen.grid.sigmas
    gens = make_generators(11, 3)
    x = initial_noise((3, 1, 4, 4), gens, float(sigmas[0]))
    expected = sample_heun(model.guided(1.0), x, sigmas, generator=gens, churn=Churn(s_churn=0.5, s_noise=0.7))
    torch.testing.assert_close(gen.samples, expected, rtol=0, atol=1e-6)
    plain = generate(model, dataclasses.replace(request, sampler_options=None))
    assert not torch.equal(plain.samples, gen.samples)
    with pytest.raises(UsageError, match=r"unknown option 'eta' for sampler Heun \(valid: s_churn, s_tmin, s_tmax, "
                                         r"s_noise\)"):
        generate(model, dataclasses.replace(request, sampler_options={"eta": 1.0}))

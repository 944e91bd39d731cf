"""The model interface's seams, proven on three kinds of model (issue 17, part 7): an unconditional model, a toy
text-conditioned model and a toy latent model all go through generation, guidance, the sweep, the reverse strip and
(text) the phases with the code every command uses."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
import torch

from diffuscope.cli import main as cli_main
from diffuscope.core.conditioning import TEXT_ENCODERS, TextCond, TextConditioner, register_text_encoder
from diffuscope.core.model import DiffusionModel
from diffuscope.core.reference import GaussianDenoiser
from diffuscope.core.schedules import EDMSchedule
from diffuscope.generation.generate import GenerationRequest, generate

TOY_DIM = 8


def trigram_encoder(prompts):
    """A tiny deterministic text encoder: each character trigram hashed to a fixed random vector (tokens), the mask,
    and the mean as the pooled vector. Different words give different conditions; the empty prompt one zero token."""
    rows = []
    for text in prompts:
        padded = f"  {text} "
        grams = [padded[i:i + 3] for i in range(len(padded) - 2)] if text else []
        vecs = [torch.randn(TOY_DIM, generator=torch.Generator().manual_seed(
            int(hashlib.sha256(g.encode()).hexdigest()[:8], 16))) for g in grams]
        rows.append(torch.stack(vecs) if vecs else torch.zeros(1, TOY_DIM))
    length = max(len(r) for r in rows)
    tokens = torch.zeros(len(rows), length, TOY_DIM)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, r in enumerate(rows):
        tokens[i, : len(r)], mask[i, : len(r)] = r, True
    pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return tokens, mask, pooled


@pytest.fixture
def toy_text_encoder():
    register_text_encoder("toy-trigram", lambda: TextConditioner(trigram_encoder, "toy-trigram"))
    yield "toy-trigram"
    TEXT_ENCODERS.pop("toy-trigram", None)


def _run(capsys, *argv):
    code = cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- (a) an unconditional model ----------------------------------------------------------------------------------


def test_unconditional_model_trains_samples_sweeps_and_draws_its_reverse_strip(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = _run(capsys, "train", "--data", "digits", "--conditioning", "none", "--max-steps", "30",
                        "--out", run, "--quiet", "--device", "cpu")
    assert code == 0, err
    from diffuscope.models.load import load_model

    model = load_model(run)
    assert model.conditioner.kind == "none" and not model.conditioner.has_null and model.class_names == ()
    code, out, err = _run(capsys, "sample", "--model", run, "--n", "4", "--steps", "5", "--out", tmp_path / "o",
                          "--device", "cpu")
    assert code == 0, err
    assert "no prompt" in out and "guidance 1" in out
    assert len(list((tmp_path / "o").glob("0000*-*.png"))) == 4
    code, out, err = _run(capsys, "sweep", "--model", run, "--steps", "5,10", "--n", "16", "--out", tmp_path / "s",
                          "--no-progress", "--device", "cpu")
    assert code == 0, err
    assert (tmp_path / "s" / "report.json").is_file()
    code, _, err = _run(capsys, "reverse", "--model", run, "--steps", "6", "--show", "3", "--out", tmp_path / "r",
                        "--device", "cpu")
    assert code == 0, err
    assert (tmp_path / "r" / "reverse.png").is_file()
    # a prompt for an unconditional model is a one-line error, exit 2
    code, _, err = _run(capsys, "sample", "--model", run, "--prompt", "7", "--n", "1", "--out", tmp_path / "x",
                        "--device", "cpu")
    assert code == 2 and "unconditional" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


# --- (b) a toy text-conditioned model ---------------------------------------------------------------------------


def _train_text_model(tmp_path, encoder_name):
    from diffuscope.training import train
    from diffuscope.training.config import preset

    cfg = preset("digits")
    unet = replace(cfg.model.unet, text_dim=TOY_DIM, attention_resolutions=(4,), num_heads=2)
    cfg = replace(cfg, model=replace(cfg.model, unet=unet, conditioning="text", text_encoder=encoder_name),
                  train=replace(cfg.train, max_steps=8, checkpoint_every=8, sample_every=0, device="cpu", log_every=4))
    train(cfg, tmp_path / "text-run")
    from diffuscope.models.load import load_model

    return load_model(tmp_path / "text-run")


def test_toy_text_model_trains_and_goes_through_generation_guidance_sweep_reverse_and_phases(tmp_path,
                                                                                              toy_text_encoder):
    from diffuscope.lesson.phases_report import PhasesConfig, measure_phases
    from diffuscope.lesson.reverse import reverse_process
    from diffuscope.sweep import SweepConfig, sweep

    model = _train_text_model(tmp_path, toy_text_encoder)
    assert model.conditioner.kind == "text" and model.config.unet.text_dim == TOY_DIM
    cond = model.conditioner.encode(["seven", "two"])
    assert isinstance(cond, TextCond) and cond.tokens.shape[0] == 2
    # the network sees the text: different prompts, different predictions from the same noise
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma = torch.full((2,), 1.0, dtype=torch.float64)
    d = model.denoiser(x[:1].expand(2, -1, -1, -1), sigma, cond)
    assert not torch.allclose(d[0], d[1])
    # guided generation with the empty prompt as the null condition; repeatable per seed
    gen = generate(model, GenerationRequest(prompts=("seven",), n=3, steps=4, guidance=2.0, seed=1))
    again = generate(model, GenerationRequest(prompts=("seven",) * 3, steps=4, guidance=2.0, seed=1))
    assert gen.images.shape == (3, 1, 8, 8) and torch.equal(gen.images, again.images)
    plain = generate(model, GenerationRequest(prompts=("seven",), n=3, steps=4, guidance=1.0, seed=1))
    assert not torch.allclose(gen.images, plain.images)  # guidance changed the images
    result = sweep(model, SweepConfig(steps=(2, 4), samplers=("Euler",), prompts=("seven", "two"), n=4,
                                      reference_steps=8, metrics=("convergence",), guidance=2.0))
    assert [c.steps for c in result.cells] == [2, 4] and result.info["prompts"] == ["seven", "two"]
    rev = reverse_process(model, GenerationRequest(prompts=("seven",), steps=4, guidance=2.0))
    assert rev.trajectory.x.shape[:2] == (4, 1) and rev.prompt == "seven"
    freq, commit, consist, _ = measure_phases(model, PhasesConfig(prompt="seven", steps=4, n=2, points=2,
                                                                consistency_steps=(2, 4)))
    assert len(freq.steps) == 3 and commit.keep is None and consist.steps == [2, 4]


# --- (c) a toy latent model ---------------------------------------------------------------------------------------


class PoolCodec:
    """A fixed 2x average-pool encoder and a nearest-neighbour decoder: a latent space of half the size."""

    image_shape = (1, 8, 8)
    latent_shape = (1, 4, 4)

    def encode(self, images):
        return torch.nn.functional.avg_pool2d(images, 2)

    def decode(self, latents):
        return torch.nn.functional.interpolate(latents, scale_factor=2.0, mode="nearest")


def _latent_model():
    from diffuscope.core.conditioning import NoConditioner

    denoiser = GaussianDenoiser(mu=torch.full((1, 4, 4), 0.3), s=0.5)
    denoiser.schedule = EDMSchedule()
    return DiffusionModel(denoiser, NoConditioner(), (1, 4, 4), name="toy-latent", codec=PoolCodec())


def test_toy_latent_model_generates_decoded_images_strips_and_sweeps():
    from diffuscope.lesson.reverse import reverse_process
    from diffuscope.sweep import SweepConfig, sweep

    model = _latent_model()
    assert model.image_shape == (1, 8, 8) and model.is_latent
    gen = generate(model, GenerationRequest(n=3, steps=6))
    assert gen.images.shape == (3, 1, 8, 8) and gen.samples.shape == (3, 1, 4, 4)
    torch.testing.assert_close(gen.images, PoolCodec().decode(gen.samples))
    round_trip = model.encode(model.decode(gen.samples))
    torch.testing.assert_close(round_trip, gen.samples)
    rev = reverse_process(model, GenerationRequest(steps=5))
    assert rev.trajectory.x.shape == (5, 1, 1, 8, 8) and rev.trajectory.denoised.shape == (5, 1, 1, 8, 8)
    assert rev.x_is_vp
    result = sweep(model, SweepConfig(steps=(3, 6), samplers=("Heun",), n=4, reference_steps=12,
                                      metrics=("convergence",)))
    cell = result.cells[-1]
    assert cell.images.shape[-2:] == (8, 8)  # metrics and pictures of decoded images
    assert result.cells[0].metrics["conv_pixel"] > cell.metrics["conv_pixel"] >= 0


def test_a_text_prompt_given_to_a_class_model_is_refused_and_unconditional_generation_needs_n():
    from diffuscope.checks.errors import UsageError
    from diffuscope.core.conditioning import ClassConditioner
    with pytest.raises(UsageError, match="unknown prompt"):
        ClassConditioner(("0", "1")).encode(["red apple"])
    model = DiffusionModel.bare(GaussianDenoiser(mu=torch.zeros(1, 2, 2), s=1.0), EDMSchedule(), (1, 2, 2))
    with pytest.raises(UsageError, match="needs the number of images"):
        generate(model, GenerationRequest(steps=2))

"""Loading diffusers pipeline folders (``adapters.pipeline``): what the model exposes, a pixel pipeline against its
own call, the text conditioner and the VAE codec against the pipeline's components, and the one-line refusals."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffuscope.adapters.pipeline import load_pipeline_model  # noqa: E402
from diffuscope.adapters.vae import fit_latent_rgb  # noqa: E402
from diffuscope.checks.errors import UsageError  # noqa: E402
from diffuscope.core.conditioning import ClassCond, TextCond  # noqa: E402
from diffuscope.core.guidance import CFGDenoiser  # noqa: E402
from diffuscope.core.schedules import make_grid  # noqa: E402
from diffuscope.models.load import load_model  # noqa: E402
from diffuscope.samplers import SAMPLERS, initial_noise, make_generators, sample_ddim  # noqa: E402
from tiny_pipelines import MAX_TOKENS, load_pipeline, save_ddpm_pipeline, save_text_pipeline  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return save_text_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(scope="module")
def sd(sd_folder):
    return load_model(sd_folder)  # through checkpoint.load_model's dispatch


@pytest.fixture(scope="module")
def sd_pipe(sd_folder):
    return load_pipeline(sd_folder)


@pytest.fixture(scope="module")
def ddpm_folder(tmp_path_factory):
    return save_ddpm_pipeline(tmp_path_factory.mktemp("ddpm") / "tiny-ddpm")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def copy_of(folder, tmp_path):
    dest = tmp_path / folder.name
    shutil.copytree(folder, dest)
    return dest


# --- pixel pipelines ---------------------------------------------------------------------------------------------


def test_ddpm_pipeline_model_and_ddim_parity(ddpm_folder):
    model = load_model(ddpm_folder)
    assert model.sample_shape == (3, 8, 8) and model.image_shape == (3, 8, 8) and model.codec is None
    assert model.conditioner.kind == "none" and model.path == ddpm_folder
    # DDPMScheduler's defaults: leading spacing, steps_offset 0 -> 900, 800, ..., 0 for 10 steps
    grid = make_grid(model.schedule, 10)
    assert grid.spacing == "leading" and grid.timesteps.tolist() == list(range(900, -1, -100))

    pipe = diffusers.DDIMPipeline.from_pretrained(ddpm_folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(batch_size=1, generator=torch.Generator().manual_seed(3), eta=0.0, num_inference_steps=10,
                    output_type="np").images  # [1, H, W, C] in [0, 1]
    noise = torch.randn(1, *model.sample_shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        x = sample_ddim(model.denoiser, noise * (1 + float(grid.sigmas[0]) ** 2) ** 0.5, grid.sigmas)
    ours = (model.decode(x) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    assert rel(ours, torch.from_numpy(expected)) < 1e-4


def test_class_conditional_unet_takes_indices_and_refuses_guidance(ddpm_folder, tmp_path):
    folder = save_ddpm_pipeline(tmp_path / "classes", num_classes=3)
    model = load_pipeline_model(folder)
    assert model.conditioner.kind == "class" and model.class_names == ("0", "1", "2")
    cond = model.conditioner.encode(["2", "0"])
    assert isinstance(cond, ClassCond) and cond.labels.tolist() == [2, 0]
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        a, b = model.denoiser(x, torch.tensor([2.0, 2.0]), cond), model.denoiser(x, torch.tensor([2.0, 2.0]),
                                                                                 cond.labels.flip(0))
    assert not torch.allclose(a, b)  # the label reaches the UNet
    assert not model.conditioner.has_null
    with pytest.raises(UsageError, match="no null class"):
        model.conditioner.null(1)
    with pytest.raises(UsageError, match=r"unknown prompt .7. \(valid: 0, 1, 2"):
        model.conditioner.encode(["7"])


# --- text-to-image pipelines -------------------------------------------------------------------------------------


def test_text_pipeline_model(sd, sd_folder):
    assert sd.sample_shape == (4, 8, 8) and sd.image_shape == (3, 16, 16)
    assert sd.conditioner.kind == "text" and sd.name == "tiny-sd"
    assert sd.schedule.default_spacing == "leading" and sd.schedule.steps_offset == 1
    assert sd.run_config["pipeline"] == "StableDiffusionPipeline"


@pytest.mark.parametrize("spec", list(SAMPLERS.values()), ids=list(SAMPLERS))
def test_every_sampler_runs_guided_on_the_text_pipeline(sd, spec):
    grid = make_grid(sd.schedule, 3)
    generators = make_generators(0, 2)
    x = initial_noise((2, *sd.sample_shape), generators, float(grid.sigmas[0]))
    guided = CFGDenoiser(sd.denoiser, 2.0, sd.conditioner.null(1))
    with torch.no_grad():
        out = spec.fn(guided, x, grid.sigmas, cond=sd.conditioner.encode(["a red cat", "a dog"]),
                      generator=generators)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_text_conditioner_is_the_pipelines_prompt_encoding(sd, sd_pipe):
    cond = sd.conditioner.encode(["a red cat", "a blue dog"])
    assert isinstance(cond, TextCond) and cond.tokens.shape == (2, MAX_TOKENS, 32) and cond.pooled.shape == (2, 32)
    embeds, negative = sd_pipe.encode_prompt(["a red cat", "a blue dog"], "cpu", 1, True)
    torch.testing.assert_close(cond.tokens, embeds)  # one prompt at a time: float32 rounding
    torch.testing.assert_close(sd.conditioner.null(2).tokens, negative)  # the empty prompt
    ids = sd_pipe.tokenizer(["a red cat"], padding="max_length", max_length=MAX_TOKENS, return_tensors="pt")
    assert cond.mask[0].tolist() == ids.attention_mask[0].bool().tolist()
    with torch.no_grad():
        pooled = sd_pipe.text_encoder(ids.input_ids).pooler_output
    torch.testing.assert_close(cond.pooled[:1], pooled)
    with pytest.raises(UsageError, match="tokens long"):
        sd.conditioner.encode([" ".join(["cat"] * MAX_TOKENS)])


def test_vae_codec_scales_like_the_pipeline(sd, sd_pipe):
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = sd_pipe.vae.decode(latents / sd_pipe.vae.config.scaling_factor).sample
        images = sd.decode(latents)
        torch.testing.assert_close(images, expected)
        mean = sd_pipe.vae.encode(images).latent_dist.mean * sd_pipe.vae.config.scaling_factor
    torch.testing.assert_close(sd.encode(images), mean)  # the posterior mean, not a sample
    assert torch.equal(sd.encode(images), sd.encode(images))


def test_latent_preview_fit_recovers_a_linear_decoder():
    """``fit_latent_rgb`` on a decoder that IS linear per latent pixel (then f x f up-sampled) finds its map."""
    weight, bias = torch.randn(3, 4, generator=torch.Generator().manual_seed(1)), torch.tensor([0.1, -0.2, 0.3])

    def decode(z):
        rgb = torch.einsum("oc,bchw->bohw", weight, z) + bias.reshape(1, 3, 1, 1)
        return torch.nn.functional.interpolate(rgb, scale_factor=2, mode="nearest")

    w, b = fit_latent_rgb(decode, 4, 2)
    torch.testing.assert_close(w, weight, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(b, bias, rtol=1e-4, atol=1e-4)


def test_latent_preview_of_the_pipeline_vae(sd):
    """Shapes, range, and on held-out latents a smaller error to the pooled decode than the mean colour's (a random
    VAE is far from linear: docs/diffusers.md gives the fraction of variance it leaves)."""
    latents = torch.randn(8, 4, 8, 8, generator=torch.Generator().manual_seed(11))
    preview = sd.codec.preview(latents, upscale=False)
    assert preview.shape == (8, 3, 8, 8) and sd.codec.preview(latents).shape == (8, 3, 16, 16)
    assert preview.abs().max() <= 1
    target = torch.nn.functional.avg_pool2d(sd.decode(latents), sd.codec.factor)
    residual = ((preview - target) ** 2).mean() / ((target - target.mean((0, 2, 3), keepdim=True)) ** 2).mean()
    assert residual < 1, float(residual)


def test_half_precision_runs_and_stays_close(sd_folder, sd):
    bf16 = load_pipeline_model(sd_folder, dtype="bf16")
    assert next(bf16.denoiser.net.parameters()).dtype == torch.bfloat16
    assert bf16.run_config["dtype"] == "bfloat16"
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out16 = bf16.denoiser(x, torch.tensor([1.0]), bf16.conditioner.encode(["a cat"]))
        out32 = sd.denoiser(x, torch.tensor([1.0]), sd.conditioner.encode(["a cat"]))
    assert out16.dtype == torch.float32 and rel(out16, out32) < 0.05
    assert bf16.decode(x).dtype == torch.float32


# --- refusals ----------------------------------------------------------------------------------------------------


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_pickle_only_weights_are_refused(ddpm_folder, tmp_path):
    folder = copy_of(ddpm_folder, tmp_path)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(folder / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(UsageError) as e:
        load_model(folder)
    assert "diffusion_pytorch_model.bin" in one_line(e) and "pickle" in one_line(e)


def test_missing_component_is_refused(sd_folder, tmp_path):
    folder = copy_of(sd_folder, tmp_path)
    shutil.rmtree(folder / "vae")
    with pytest.raises(UsageError, match="vae") as e:
        load_pipeline_model(folder)
    one_line(e)
    folder = copy_of(sd_folder, tmp_path / "no-encoder")
    index = json.loads((folder / "model_index.json").read_text())
    index["text_encoder"] = [None, None]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(UsageError, match="no text_encoder component"):
        load_pipeline_model(folder)


def test_not_a_pipeline_and_bad_options_are_refused(ddpm_folder, tmp_path):
    with pytest.raises(UsageError, match="not a diffusers pipeline folder"):
        load_pipeline_model(tmp_path)
    (tmp_path / "model_index.json").write_text("[1, 2]")
    with pytest.raises(UsageError, match="not a pipeline index"):
        load_pipeline_model(tmp_path)
    with pytest.raises(UsageError, match=r"unknown dtype 'fp8' \(valid: fp32, fp16, bf16\)"):
        load_pipeline_model(ddpm_folder, dtype="fp8")
    folder = copy_of(ddpm_folder, tmp_path / "flow")
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({**config, "prediction_type": "flow"}))
    with pytest.raises(UsageError, match="prediction_type"):
        load_pipeline_model(folder)


def test_flow_matching_scheduler_is_refused(ddpm_folder, tmp_path):
    folder = copy_of(ddpm_folder, tmp_path)
    index = json.loads((folder / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({"num_train_timesteps": 1000}))
    with pytest.raises(UsageError, match="no betas"):
        load_pipeline_model(folder)


@pytest.mark.parametrize("missing", ["transformers", "diffusers"])
def test_missing_library_names_the_extra(sd_folder, monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # import of it now raises ImportError
    with pytest.raises(UsageError, match=r"needs the .* package: pip install 'diffuscope\[diffusers\]'") as e:
        load_pipeline_model(sd_folder)
    assert missing in one_line(e)


def test_huge_num_train_timesteps_is_refused_before_any_table_is_built(ddpm_folder, tmp_path):
    """num_train_timesteps 1e9 made diffusers allocate 4.2 GB of betas, then traceback: bounded by MAX_TIMESTEPS
    when the scheduler config is read (one past the bound here, which diffusers itself would build happily)."""
    from diffuscope.checks.limits import MAX_TIMESTEPS

    folder = copy_of(ddpm_folder, tmp_path)
    file = folder / "scheduler" / "scheduler_config.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), "num_train_timesteps": MAX_TIMESTEPS + 1}))
    with pytest.raises(UsageError, match="num_train_timesteps") as e:
        load_pipeline_model(folder)
    assert "docs/limits.md" in one_line(e)


def test_tokenizer_beyond_the_encoders_vocabulary_is_refused_at_load(sd_folder, tmp_path):
    """Added tokens the text encoder has no embedding row for: an IndexError on the first such prompt before; now
    one line when the folder is loaded."""
    from transformers import CLIPTokenizer

    folder = copy_of(sd_folder, tmp_path)
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    tokenizer.add_tokens(["zebra</w>", "unicorn"])
    tokenizer.save_pretrained(folder / "tokenizer")
    with pytest.raises(UsageError, match="token ids but the text encoder embeds only") as e:
        load_pipeline_model(folder)
    one_line(e)


def test_library_logs_are_silenced_around_loads(sd_folder, tmp_path):
    """A text encoder whose config does not fit its weights: transformers logged a ~25-line load report before our
    error line; now only our line, and the libraries' verbosity is restored after."""
    import logging

    import transformers

    folder = copy_of(sd_folder, tmp_path)
    file = folder / "text_encoder" / "config.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), "num_hidden_layers": 3, "hidden_size": 48}))
    before = transformers.utils.logging.get_verbosity()
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # what transformers' own stderr handler would print
    logging.getLogger("transformers").addHandler(handler)
    try:
        with pytest.raises(UsageError, match="text encoder") as e:
            load_pipeline_model(folder)
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    one_line(e)
    assert not records, [r.getMessage()[:200] for r in records]
    assert transformers.utils.logging.get_verbosity() == before

"""Training in an autoencoder's latent space (training/latent.py): a latent model carries its autoencoder in every
checkpoint (sha256-verified), decodes its own samples, survives the autoencoder's run folder going away, exports
with it, resumes exactly, and refuses an autoencoder that does not fit the data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.generation.generate import GenerationRequest, generate
from diffuscope.io.checkpoint import list_checkpoints, read_manifest
from diffuscope.models.load import export_model, load_model
from diffuscope.nets import UNetConfig
from diffuscope.nets.autoencoder import AutoencoderConfig
from diffuscope.nets.codec import CODEC_FILES, load_codec
from diffuscope.training import config as run_config
from diffuscope.training import train
from diffuscope.training.autoencoder import AutoencoderRunConfig, AutoencoderTrainConfig, levels_for, train_autoencoder
from diffuscope.training.config import DataConfig, TrainConfig

MULT, BLOCKS = levels_for(1)  # 8x8x1 digits -> 2x8x8 latents (the U-Net's smallest size is 8)
TINY_AE = AutoencoderConfig(image_size=8, in_channels=1, latent_channels=2, base_channels=8, channel_mult=MULT,
                            num_res_blocks=BLOCKS)


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
    run = tmp_path_factory.mktemp("ae") / "run"
    t = AutoencoderTrainConfig(max_steps=4, batch_size=16, warmup_steps=1, eval_every=0, checkpoint_every=4)
    train_autoencoder(AutoencoderRunConfig(DataConfig(name="digits"), TINY_AE, t), run, progress=False)
    return run


def latent_config(autoencoder, max_steps: int = 4, **train_options):
    config = run_config.resolve("digits", None, {})
    model = replace(config.model, autoencoder=str(autoencoder), sigma_data=1.0,
                    unet=UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1))
    t = TrainConfig(max_steps=max_steps, batch_size=16, warmup_steps=1, sample_every=0, checkpoint_every=2,
                    log_every=1, **train_options)
    return replace(config, model=model, train=t)


def test_a_latent_model_carries_its_autoencoder_and_decodes(tmp_path, autoencoder):
    result = train(latent_config(autoencoder), tmp_path / "run")
    manifest = read_manifest(result.checkpoint)
    assert set(CODEC_FILES) <= set(manifest["files"])  # verified by sha256 like the weights
    model = load_model(tmp_path / "run")
    assert model.is_latent and model.sample_shape == (2, 8, 8) and model.image_shape == (1, 8, 8)
    assert model.config.autoencoder == str(list_checkpoints(autoencoder / "checkpoints")[-1])
    gen = generate(model, GenerationRequest(prompts=("3", "7"), steps=3))
    assert gen.images.shape == (2, 1, 8, 8) and gen.samples.shape == (2, 2, 8, 8)
    codec = load_codec(autoencoder)  # the very autoencoder it trained in, one image at a time (batch-invariant)
    assert torch.equal(gen.images, torch.cat([codec.decode(s[None]) for s in gen.samples]))
    assert (tmp_path / "run" / "samples" / "step-0000004.png").is_file()  # the preview is decoded pixels


def test_the_model_outlives_the_autoencoders_run_folder_and_exports_with_it(tmp_path, autoencoder):
    ae = tmp_path / "ae"
    shutil.copytree(autoencoder, ae)
    train(latent_config(ae, max_steps=2), tmp_path / "run")
    images = load_codec(ae).encode(torch.zeros(1, 1, 8, 8))
    shutil.rmtree(ae)
    exported = export_model(tmp_path / "run", tmp_path / "export")
    assert set(CODEC_FILES) <= set(json.loads((exported / "manifest.json").read_text())["files"])
    for source in (tmp_path / "run", exported):
        model = load_model(source)
        assert model.is_latent and torch.equal(model.encode(torch.zeros(1, 1, 8, 8)), images)


def test_a_damaged_or_missing_autoencoder_is_refused(tmp_path, autoencoder):
    train(latent_config(autoencoder, max_steps=2), tmp_path / "run")
    ckpt = list_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    weights = ckpt / "autoencoder.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(UsageError, match="does not match the sha256"):
        load_model(ckpt)
    manifest = json.loads((ckpt / "manifest.json").read_text())
    for name in CODEC_FILES:
        del manifest["files"][name]
        (ckpt / name).unlink()
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match="does not carry its autoencoder"):
        load_model(ckpt)


def test_resume_is_exact_and_keeps_the_autoencoder(tmp_path, autoencoder):
    straight = train(latent_config(autoencoder), tmp_path / "a")
    train(latent_config(autoencoder), tmp_path / "b", stop_at=2)
    resumed = train(latent_config(autoencoder), tmp_path / "b", resume="latest")
    a, b = (load_model(r.checkpoint) for r in (straight, resumed))
    for (name, p), q in zip(a.denoiser.net.state_dict().items(), b.denoiser.net.state_dict().values()):
        assert torch.equal(p, q), name


def test_an_autoencoder_that_does_not_fit_is_refused(tmp_path, autoencoder):
    config = latent_config(autoencoder)
    with pytest.raises(UsageError, match="--image-size 8"):
        train(replace(config, data=replace(config.data, image_size=16)), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    for source, message in ((tmp_path / "nowhere", "model not found"), ("mnist", "not an autoencoder")):
        with pytest.raises(UsageError, match=message):
            train(replace(config, model=replace(config.model, autoencoder=str(source))), tmp_path / "r2")
    assert not (tmp_path / "r2").exists()


def test_command(tmp_path, autoencoder):
    toml = tmp_path / "tiny.toml"
    toml.write_text("[model]\nsigma_data = 1.0\n[model.unet]\nbase_channels = 8\nchannel_mult = [1, 2]\n"
                    "num_res_blocks = 1\n[train]\nbatch_size = 16\nsample_every = 0\n")
    cmd = [sys.executable, "-m", "diffuscope", "train", "--data", "digits", "--config", str(toml), "--max-steps",
           "2", "--quiet", "--autoencoder"]
    ok = subprocess.run([*cmd, str(autoencoder), "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert load_model(tmp_path / "run").is_latent
    bad = subprocess.run([*cmd, str(tmp_path / "nowhere"), "--out", str(tmp_path / "r2")], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "nowhere" in bad.stderr
    assert not (tmp_path / "r2").exists()


def test_forward_shows_a_latent_models_encoded_image(tmp_path, autoencoder, capsys):
    from PIL import Image

    from diffuscope.cli import main

    train(latent_config(autoencoder, max_steps=2), tmp_path / "run")
    assert main(["forward", "--model", str(tmp_path / "run"), "--out", str(tmp_path / "fw"), "--t", "0,500"]) == 0
    picture = Image.open(tmp_path / "fw" / "forward_latent.png")
    assert picture.height > Image.open(tmp_path / "fw" / "forward.png").height  # decoded row + 2 channel rows
    assert "forward_latent.png" in capsys.readouterr().out
    assert main(["forward", "--model", "mnist", "--out", str(tmp_path / "fw2")]) == 2  # not a latent model

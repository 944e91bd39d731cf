"""The KL autoencoder: network shapes, training run folder (checkpoints, exact resume), the codec, the command."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.cli import main
from diffuscope.io.checkpoint import list_checkpoints
from diffuscope.models.load import export_model
from diffuscope.nets.autoencoder import Autoencoder, AutoencoderConfig, kl_divergence
from diffuscope.nets.codec import AutoencoderCodec, is_autoencoder_checkpoint, load_codec
from diffuscope.training.autoencoder import (
    AutoencoderRunConfig,
    AutoencoderTrainConfig,
    levels_for,
    psnr,
    train_autoencoder,
)
from diffuscope.training.config import DataConfig

TINY = AutoencoderConfig(image_size=8, in_channels=1, latent_channels=2, base_channels=8, channel_mult=(1, 2),
                         num_res_blocks=(0, 1))


def tiny_run(max_steps: int = 6, **train) -> AutoencoderRunConfig:
    t = AutoencoderTrainConfig(max_steps=max_steps, batch_size=16, warmup_steps=2, eval_every=0,
                               checkpoint_every=3, log_every=1, threads=0, **train)
    return AutoencoderRunConfig(DataConfig(name="digits"), TINY, t)


def test_shapes_and_levels():
    ae = Autoencoder(AutoencoderConfig())  # the emoji default: 32x32x3 -> 16x16x4
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    rec, mean, logvar = ae(x, generator=torch.Generator().manual_seed(0))
    assert rec.shape == x.shape and mean.shape == logvar.shape == (2, 4, 16, 16)
    assert AutoencoderConfig().latent_shape == (4, 16, 16)
    mult, blocks = levels_for(4)
    assert AutoencoderConfig(channel_mult=mult, num_res_blocks=blocks).latent_shape == (4, 8, 8)
    assert kl_divergence(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2)).item() == 0.0
    with pytest.raises(UsageError, match="one count"):
        Autoencoder(AutoencoderConfig(num_res_blocks=(1,)))
    with pytest.raises(UsageError, match="not divisible"):
        Autoencoder(AutoencoderConfig(image_size=30, channel_mult=(1, 2, 2, 2), num_res_blocks=(0, 0, 0, 1)))


def test_psnr():
    x = torch.zeros(2, 3, 4, 4)
    assert torch.allclose(psnr(x + 0.2, x), torch.full((2,), 20.0))  # mse 0.04 on a peak-to-peak range of 2
    assert psnr(x + 5, x)[0].item() == pytest.approx(10 * torch.log10(torch.tensor(4.0)).item())  # clamped to [-1, 1]


def test_training_run_folder_and_exact_resume(tmp_path):
    straight = train_autoencoder(tiny_run(), tmp_path / "a", progress=False)
    assert [p.name for p in list_checkpoints(tmp_path / "a" / "checkpoints")] == ["step-0000003", "step-0000006"]
    assert (tmp_path / "a" / "metrics.csv").read_text().count("\n") == 7  # header + 6 steps
    assert (tmp_path / "a" / "eval.csv").read_text().count("\n") == 3
    assert straight.scale_factor == pytest.approx(1 / straight.latent_std)
    raw = json.loads((straight.checkpoint / "config.json").read_text())
    assert raw["run"]["kind"] == "autoencoder" and raw["run"]["scale_factor"] == pytest.approx(straight.scale_factor)

    train_autoencoder(tiny_run(), tmp_path / "b", stop_at=3)  # "interrupted" after step 3
    resumed = train_autoencoder(tiny_run(), tmp_path / "b", resume="latest")
    a, b = load_codec(tmp_path / "a"), load_codec(tmp_path / "b")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert resumed.psnr_heldout == pytest.approx(straight.psnr_heldout)
    with pytest.raises(UsageError, match="already exists"):
        train_autoencoder(tiny_run(), tmp_path / "a", progress=False)


def test_codec(tmp_path):
    run = train_autoencoder(tiny_run(max_steps=3), tmp_path / "run", progress=False)
    export = export_model(run.checkpoint, tmp_path / "export")
    codec = load_codec(export)
    assert isinstance(codec, AutoencoderCodec) and is_autoencoder_checkpoint(tmp_path / "run")
    assert codec.image_shape == (1, 8, 8) and codec.latent_shape == (2, 4, 4)
    assert not codec.training and not any(p.requires_grad for p in codec.parameters())
    codec.train()
    assert not codec.training  # frozen: stays in eval mode
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    z = codec.encode(x)
    assert z.shape == (5, 2, 4, 4) and torch.equal(z, codec.encode(x))  # the posterior mean: deterministic
    mean, _ = codec.autoencoder.encode(x)
    assert torch.allclose(z, mean * codec.scale_factor)
    y = codec.decode(z * 100)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    with pytest.raises(ValueError, match="latents must be"):
        codec.decode(torch.zeros(1, 4, 4, 4))
    with pytest.raises(UsageError, match="not found"):
        load_codec(tmp_path / "nothing")


def test_load_codec_refuses_a_diffusion_model():
    with pytest.raises(UsageError, match="not an autoencoder"):
        load_codec("mnist")


def test_command(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["autoencoder", "--data", "digits", "--out", str(out), "--image-size", "8", "--base-channels", "8",
            "--max-steps", "2", "--checkpoint-every", "2", "--quiet"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "held-out PSNR" in text and "scale factor" in text and "latents 4x4x4" in text
    assert main(argv) == 2  # the run folder is not empty: refused without --resume
    assert "already exists" in capsys.readouterr().err
    assert main([*argv[:-3], "--lr", "-1"]) == 2
    assert main([*argv, "--resume", "latest", "--max-steps", "3"]) == 0
    assert list_checkpoints(out / "checkpoints")[-1].name == "step-0000003"


def test_emoji_reconstruction():
    """The shipped emoji model's autoencoder reconstructs emoji: colour 32x32 images through 16x16x4 latents come
    back at over 25 dB PSNR each (30.5 dB held-out mean, docs/benchmarks.md; measured 36.9 / 27.1 / 31.7 dB on these
    three), where an untrained one of the same shape gives about 7 dB and an all-white image 6-9 dB."""
    from importlib import resources

    from diffuscope.data.emoji import load_emoji
    from diffuscope.nets.codec import load_embedded_codec

    x = load_emoji("all", None, None, prompts=("red heart", "crying cat", "palm tree")).images
    codec = load_embedded_codec(resources.files("diffuscope.models") / "emoji")
    z = codec.encode(x)
    assert z.shape == (3, 4, 16, 16)
    assert (psnr(codec.decode(z), x) > 25).all(), psnr(codec.decode(z), x)
    untrained = AutoencoderCodec(Autoencoder(replace(AutoencoderConfig(), base_channels=8)), 0.5)
    assert (psnr(untrained.decode(untrained.encode(x)), x) < 15).all()


def test_full_disk_keeps_the_previous_checkpoint_and_names_the_folder(tmp_path, monkeypatch):
    import errno
    import re

    from diffuscope.io import checkpoint as ckpt_io
    from diffuscope.training.loop import TrainingError

    train_autoencoder(tiny_run(), tmp_path / "ae", progress=False, stop_at=3)
    real = ckpt_io.save_file

    def full_disk(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_io, "save_file", full_disk)
    ckpts = tmp_path / "ae" / "checkpoints"
    where = re.escape(str(ckpts))
    with pytest.raises(TrainingError, match=rf"step 6 \(No space left on device\) to {where}; .*0003 is intact"):
        train_autoencoder(tiny_run(), tmp_path / "ae", progress=False, resume="latest")
    assert [p.name for p in ckpts.iterdir()] == ["step-0000003"]

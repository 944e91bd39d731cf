"""A latent model's frozen autoencoder as a ``Codec``: pixels in [-1, 1] <-> scaled latents.

    codec = load_codec("runs/emoji-ae")          # a run folder, a checkpoint folder or an exported copy
    z = codec.encode(images)                     # [N, 3, 32, 32] -> [N, 4, 16, 16], about unit std
    x = codec.decode(z)                          # -> [N, 3, 32, 32] in [-1, 1]

``encode`` uses the posterior mean (deterministic: the same image always gives the same latent) times the scale
factor saved with the checkpoint (1 / std of the training latents, Rombach et al. 2022 App. G); ``decode`` divides
it out again and clamps the pixels. Inputs may live on any device: they are moved to the codec's device and the
result is returned on the input's device.

A latent diffusion model carries its autoencoder: every checkpoint of ``train --autoencoder RUN`` holds
``autoencoder.safetensors`` (the EMA weights) and ``autoencoder.json`` (config, scale factor, source), listed in
its sha256 manifest, so the model never depends on the autoencoder's run folder staying where it was.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from diffuscope.checks.errors import UsageError, quote
from diffuscope.io import checkpoint as ckpt_io
from diffuscope.io import config as config_io
from diffuscope.nets.autoencoder import Autoencoder, AutoencoderConfig, check_autoencoder_config

CODEC_WEIGHTS = "autoencoder.safetensors"
CODEC_CONFIG = "autoencoder.json"
CODEC_FILES = (CODEC_WEIGHTS, CODEC_CONFIG)


class AutoencoderCodec(nn.Module):
    """The ``Codec`` protocol (INTERFACE.md) over a trained ``Autoencoder``; frozen, in eval mode."""

    def __init__(self, autoencoder: Autoencoder, scale_factor: float, path: Path | None = None):
        super().__init__()
        if not scale_factor > 0:
            raise UsageError(f"the latent scale factor must be positive, got {scale_factor}")
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.scale_factor = float(scale_factor)
        self.path = path
        super().train(False)

    @property
    def config(self) -> AutoencoderConfig:
        return self.autoencoder.config

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.config.image_shape

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.config.latent_shape

    @property
    def device(self) -> torch.device:
        return next(self.autoencoder.parameters()).device

    def train(self, mode: bool = True) -> AutoencoderCodec:  # frozen: always in eval mode
        return super().train(False)

    def save_into(self, folder: str | Path) -> tuple[str, ...]:
        """Write this codec into a model folder (``CODEC_FILES``) so the model carries its autoencoder."""
        from safetensors.torch import save_file

        folder = Path(folder)
        weights = {k: v.detach().cpu().contiguous() for k, v in self.autoencoder.state_dict().items()}
        save_file(weights, str(folder / CODEC_WEIGHTS))
        meta = {"model": config_io.to_dict(self.config), "scale_factor": self.scale_factor,
                "source": str(self.path) if self.path else ""}
        (folder / CODEC_CONFIG).write_text(json.dumps(meta, indent=2))
        return CODEC_FILES

    def _check(self, x: Tensor, shape: tuple[int, int, int], what: str) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != shape:
            raise ValueError(f"{what} must be [N, {', '.join(map(str, shape))}], got {tuple(x.shape)}")

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Pixels [N, C, H, W] in [-1, 1] -> scaled latents (posterior mean * scale_factor)."""
        self._check(images, self.image_shape, "images")
        mean, _ = self.autoencoder.encode(images.to(self.device, torch.float32))
        return (mean * self.scale_factor).to(images.device)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Scaled latents -> pixels in [-1, 1]."""
        self._check(latents, self.latent_shape, "latents")
        x = self.autoencoder.decode(latents.to(self.device, torch.float32) / self.scale_factor)
        return x.clamp(-1.0, 1.0).to(latents.device)


def is_autoencoder_checkpoint(path: str | Path) -> bool:
    """Whether a run/checkpoint folder holds an autoencoder (config.json's run.kind)."""
    try:
        ckpt = ckpt_io.resolve_checkpoint(path)
        raw = json.loads((ckpt / "config.json").read_text())
    except (UsageError, OSError, json.JSONDecodeError):
        return False
    return raw.get("run", {}).get("kind") == "autoencoder"


def load_codec(path: str | Path, *, device: str | torch.device = "cpu") -> AutoencoderCodec:
    """The EMA autoencoder of a run folder (its newest complete checkpoint), a checkpoint folder or an export."""
    ckpt = ckpt_io.resolve_checkpoint(path)
    ckpt_io.read_manifest(ckpt)
    try:
        raw = json.loads((ckpt / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"checkpoint {ckpt} has an unreadable config.json: {e}") from None
    run = raw.get("run", {})
    if run.get("kind") != "autoencoder":
        raise UsageError(f"{path} is not an autoencoder (train one with `diffuscope autoencoder`)")
    config = config_io.from_dict(AutoencoderConfig, raw.get("model", {}), "model")
    if "scale_factor" not in run:
        raise UsageError(f"autoencoder checkpoint {ckpt} has no latent scale factor in its config.json")
    model = Autoencoder(config)
    ckpt_io.load_weights(model, ckpt / "ema.safetensors")
    return AutoencoderCodec(model.to(device), float(run["scale_factor"]), ckpt)


def load_embedded_codec(folder: str | Path, *, device: str | torch.device = "cpu") -> AutoencoderCodec:
    """The autoencoder a latent model's checkpoint carries (``CODEC_FILES``, written by ``save_into``); the
    caller has verified the files against the checkpoint's manifest."""
    folder = Path(folder)
    path = folder / CODEC_CONFIG
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"latent model {folder} has no readable {CODEC_CONFIG}: {str(e).splitlines()[0][:120]}") \
            from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        raise UsageError(f"{path} must be an object with a 'model' table")
    scale = raw.get("scale_factor")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < 1e6:
        raise UsageError(f"{path}: scale_factor must be a positive number, got {quote(scale)}")
    config = config_io.from_dict(AutoencoderConfig, raw["model"], "model")
    check_autoencoder_config(config)
    model = Autoencoder(config)
    ckpt_io.load_weights(model, folder / CODEC_WEIGHTS)
    return AutoencoderCodec(model.to(device), float(scale), folder)

"""Loading a model of any kind: a built-in name, a checkpoint or run folder, or a diffusers pipeline folder; and
exporting a checkpoint into the layout of a built-in model (``src/diffuscope/models/NAME``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from diffuscope.checks import validate
from diffuscope.checks.errors import UsageError, one_line
from diffuscope.core.model import DiffusionModel
from diffuscope.io import config as config_io
from diffuscope.io.checkpoint import (
    FORMAT_VERSION,
    MANIFEST,
    file_entries,
    load_weights,
    read_manifest,
    resolve_checkpoint,
    write_json_atomic,
)
from diffuscope.models.config import ModelConfig, build_conditioner, build_denoiser, check_model


def load_config(ckpt: Path) -> tuple[ModelConfig, dict[str, Any]]:
    """The checkpoint's config.json, typed and bounded (check_model) before any network is built."""
    path = Path(ckpt) / "config.json"
    try:
        if path.stat().st_size > config_io.MAX_CONFIG_BYTES:
            raise UsageError(f"{path} is larger than {config_io.MAX_CONFIG_BYTES} bytes")
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"checkpoint {ckpt} has an unreadable config.json: {one_line(str(e), 120)}") from None
    with validate.in_file(path):
        validate.expect(raw, dict, str(path), "the root")
        validate.expect(raw.get("model"), dict, str(path), "model")
        run = validate.expect(raw.get("run", {}), dict, str(path), "run")
        config = config_io.from_dict(ModelConfig, raw["model"], "model")
        check_model(config)
    return config, run


def model_name(ckpt: Path, run_config: dict[str, Any]) -> str:
    """The name shown for a model: its run's ``model_name``, else the run folder's (or the checkpoint's) name."""
    ckpt = Path(ckpt)
    return run_config.get("model_name") or (ckpt.parent.parent.name if ckpt.parent.name == "checkpoints"
                                            else ckpt.name)


def load_model(path: str | Path, *, ema: bool = True, device: str | torch.device = "cpu",
               dtype: str | None = None) -> DiffusionModel:
    """Load a model for sampling (EMA weights by default) from a checkpoint or run folder, in eval mode. ``dtype``
    ("fp32", "fp16", "bf16"; default fp32) is the precision of a diffusers pipeline's weights; diffuscope's own
    models run in fp32."""
    if (Path(path) / "model_index.json").is_file():  # a diffusers pipeline folder (issue 21)
        from diffuscope.adapters.pipeline import load_pipeline_model

        return load_pipeline_model(path, device=device, dtype=dtype or "fp32")
    if dtype not in (None, "fp32", torch.float32):
        raise UsageError(f"--dtype {dtype} applies to diffusers pipeline folders; diffuscope's own models run in "
                         f"fp32 (valid here: fp32)")
    ckpt = resolve_checkpoint(path)
    manifest = read_manifest(ckpt)
    config, run = load_config(ckpt)
    denoiser = build_denoiser(config)
    load_weights(denoiser.net, ckpt / ("ema.safetensors" if ema else "model.safetensors"))
    denoiser.eval().requires_grad_(False).to(device)
    codec = None
    if config.autoencoder:  # a latent model: its autoencoder travels in the checkpoint (codec.py)
        from diffuscope.nets.codec import CODEC_FILES, load_embedded_codec

        missing = [n for n in CODEC_FILES if n not in manifest["files"]]
        if missing:
            raise UsageError(f"latent model {ckpt} does not carry its autoencoder ({', '.join(missing)} not in its "
                             f"{MANIFEST})")
        codec = load_embedded_codec(ckpt, device=device)
        if tuple(codec.latent_shape) != (config.unet.in_channels, config.unet.image_size, config.unet.image_size):
            raise UsageError(f"latent model {ckpt}: its autoencoder's latents {codec.latent_shape} do not fit its "
                             f"U-Net ({config.unet.in_channels}x{config.unet.image_size}x{config.unet.image_size})")
    u = config.unet
    return DiffusionModel(denoiser, build_conditioner(config), (u.in_channels, u.image_size, u.image_size),
                          name=model_name(ckpt, run), path=ckpt, step=int(manifest.get("step", 0)), config=config,
                          run_config=run, codec=codec)


def export_model(source: str | Path, dest: str | Path, *, classifier: str | Path | None = None) -> Path:
    """An inference-only copy of a checkpoint (EMA weights + config, its autoencoder and installed tuned grids, a
    fresh manifest), optionally with its metrics classifier beside it: the layout of a built-in model
    (``src/diffuscope/models/NAME``)."""
    ckpt = resolve_checkpoint(source)
    listed = read_manifest(ckpt)
    step = listed["step"]
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise UsageError(f"{dest} already exists and is not empty: refusing to overwrite it")
    dest.mkdir(parents=True, exist_ok=True)
    from diffuscope.grids.store import TUNED_FILE
    from diffuscope.nets.codec import CODEC_FILES

    files = ["ema.safetensors", "config.json"] + [n for n in CODEC_FILES if (ckpt / n).is_file()]
    files += [n for n in (TUNED_FILE,) if n in listed["files"]]  # installed tuned grids travel with it
    for name in files:
        shutil.copyfile(ckpt / name, dest / name)
    if classifier is not None:
        for name in ("classifier.safetensors", "classifier.json"):
            shutil.copyfile(Path(classifier) / name, dest / name)
            files.append(name)
    manifest = {"format": FORMAT_VERSION, "step": step, "source": str(ckpt), "files": file_entries(dest, files)}
    write_json_atomic(dest / MANIFEST, manifest)
    return dest

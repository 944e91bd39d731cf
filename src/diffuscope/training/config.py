"""The training run's configuration: frozen dataclasses, one per component, with per-dataset presets.

TOML layout (unknown keys are rejected):

    [data]            name = "mnist"
    [model]           parametrization = "edm"
    [model.schedule]  kind = "edm"
    [model.unet]      base_channels = 64
    [train]           max_steps = 6000
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from diffuscope.checks import validate
from diffuscope.checks.errors import UsageError, quote
from diffuscope.core.defaults import DEFAULT_GUIDANCE
from diffuscope.core.schedules import ScheduleConfig
from diffuscope.io import config as config_io
from diffuscope.models.config import ModelConfig
from diffuscope.nets import UNetConfig


@dataclass(frozen=True)
class DataConfig:
    name: str = "mnist"  # digits | mnist | a folder of images or MNIST IDX files
    image_size: int | None = None  # None = the data set's native size (folders: 32)
    channels: int | None = None  # None = native (folders: 1 if all images are grayscale, else 3)


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int = 2000  # optimizer steps
    batch_size: int = 64  # global batch (split across processes when data-parallel)
    lr: float = 2e-3  # AdamW peak learning rate
    # Linear LR warm-up; None = 10% of max_steps, at most 200 (resolved by `resolve`, so config.json shows it):
    # a short run is not spent warming up (500 steps with 200 of warm-up left only 300 at full rate).
    warmup_steps: int | None = None
    lr_decay: str = "cosine"  # none | cosine (to lr_min_ratio * lr at max_steps)
    lr_min_ratio: float = 0.05
    weight_decay: float = 0.0
    adam_betas: tuple[float, ...] = (0.9, 0.99)
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    ema_decay: float = 0.999  # EMA of weights; warmed up as min(decay, (1 + step) / (10 + step))
    cond_dropout: float = 0.1  # share of labels replaced by the null class (classifier-free guidance)
    min_snr_gamma: float | None = None  # Hang et al. 2023 loss weighting (e.g. 5.0); None = the objective's own
    # Log-normal training sigmas, ln(sigma) ~ N(p_mean, p_std^2). EDM used (-1.2, 1.2) (Karras et al. 2022, Table 1),
    # EDM2 (-0.4, 1.0) (Karras et al. 2024). Centred higher, at ln(sigma) ~ N(0, 1), training spends more steps where
    # the class decides the image: on mnist after 500 steps 94-95% of samples show the prompted digit against 87-88%
    # (EDM2's) and 39.5% (EDM's), and the 3000-step model is more accurate (docs/training.md).
    p_mean: float = 0.0
    p_std: float = 1.0
    seed: int = 0
    checkpoint_every: int = 500  # steps between checkpoints (the last step is always saved)
    keep_checkpoints: int = 0  # keep only the newest K checkpoints (0 = keep all)
    max_bad_batches: int = 0  # skip up to this many batches with a non-finite loss/gradient before stopping
    precision: str = "fp32"  # fp32 | bf16 (autocast; for GPUs)
    sample_every: int = 500  # steps between preview grids in RUN_DIR/samples (0 = only at the end)
    sample_sampler: str = "heun"  # preview sampler
    sample_steps: int = 18
    sample_guidance: float = DEFAULT_GUIDANCE
    log_every: int = 50  # steps between rows of metrics.csv
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads (0 = torch's default)


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def preset(data_name: str) -> RunConfig:
    """Defaults per data set: the tiny 8x8 ``digits`` gets a tiny, fast net; everything else the MNIST-size one."""
    if data_name == "digits":
        unet = UNetConfig(base_channels=32, channel_mult=(1, 2), num_res_blocks=1)
        train = TrainConfig(max_steps=2000, batch_size=64, lr=2e-3, warmup_steps=50, checkpoint_every=500,
                            sample_every=500, log_every=25)
        return RunConfig(DataConfig(name="digits"), ModelConfig(unet=unet), train)
    if data_name in ("emoji", "scenes"):  # text prompts (MiniLM tokens -> cross-attention), colour; see configs/
        unet = UNetConfig(base_channels=64, channel_mult=(1, 2, 2), num_res_blocks=1, attention_resolutions=(8, 4),
                          num_heads=4, text_dim=384)
        model = ModelConfig(unet=unet, conditioning="text", text_encoder="all-MiniLM-L6-v2")
        return RunConfig(DataConfig(name=data_name), model, TrainConfig(max_steps=4000, lr=1e-3, sample_every=1000))
    # MNIST-size default: ~1M parameters, most channels at low resolution where convolutions are cheap
    # (measured: 253 MFLOP per 28x28 forward pass, vs 541 for base 32, mult (1, 2, 2), two blocks per level).
    unet = UNetConfig(base_channels=24, channel_mult=(1, 2, 3), num_res_blocks=1)
    # Sampling starts from sigma_max 20, not EDM's 80 (training never reads it): with ln(sigma) ~ N(0, 1) training,
    # 80 is 4.4 standard deviations out, and on the shipped mnist model DPM++ 2M from 20 scores a better FD at every
    # step count >= 10 and a better converged FD (docs/benchmarks.md, "sigma_max"). Song & Ermon's rule of thumb
    # (sigma_max ~ the largest pairwise distance, 2020, Technique 1) would give 30 here (1,000 MNIST test images:
    # mean distance 20, largest 30); 20 measured better.
    schedule = ScheduleConfig(sigma_max=20.0)
    return RunConfig(DataConfig(name=data_name), ModelConfig(schedule=schedule, unet=unet), TrainConfig(max_steps=3000))


def check_run_config(config: RunConfig) -> None:
    t = config.train
    for name in ("max_steps", "batch_size"):
        value = getattr(t, name)
        if value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    for name in ("checkpoint_every", "sample_every", "log_every", "warmup_steps", "threads", "keep_checkpoints",
                 "max_bad_batches"):
        if (getattr(t, name) or 0) < 0:
            raise UsageError(f"train.{name} must be >= 0, got {getattr(t, name)}")
    if t.lr <= 0:
        raise UsageError(f"train.lr must be positive, got {t.lr}")
    if not 0 <= t.cond_dropout < 1:
        raise UsageError(f"train.cond_dropout must be in [0, 1), got {t.cond_dropout}")
    if not 0 <= t.ema_decay < 1:
        raise UsageError(f"train.ema_decay must be in [0, 1), got {t.ema_decay}")
    if t.lr_decay not in ("none", "cosine"):
        raise UsageError(f"unknown train.lr_decay {quote(t.lr_decay)} (valid: none, cosine)")
    if t.precision not in ("fp32", "bf16"):
        raise UsageError(f"unknown train.precision {quote(t.precision)} (valid: fp32, bf16)")
    if t.device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"unknown device {quote(t.device)} (valid: auto, cpu, cuda)")


def resolve(data_name: str | None, toml_path: str | Path | None, overrides: dict[str, dict[str, Any]]) -> RunConfig:
    """preset(data) <- TOML file <- flags (``overrides`` = {"data": {...}, "train": {...}}, None = not given)."""
    file_cfg = config_io.load_toml(toml_path) if toml_path else {}
    with validate.in_file(toml_path or "--config"):
        for section in ("data", "model", "train"):  # tables, before anything reads inside them
            if section in file_cfg and not isinstance(file_cfg[section], dict):
                raise UsageError(f"[{section}] must be a table, got {quote(file_cfg[section])}")
        file_name = file_cfg.get("data", {}).get("name")
        if file_name is not None:
            validate.name(file_name, "[data] name") if isinstance(file_name, str) else \
                validate.expect(file_name, str, "[data]", "name")
        name = data_name or file_name or DataConfig.name
        base = config_io.to_dict(preset(name))
        merged = _deep_merge(base, file_cfg)
        merged = _deep_merge(merged, {k: {n: v for n, v in d.items() if v is not None} for k, d in overrides.items()})
        merged["data"]["name"] = name
        config = config_io.from_dict(RunConfig, merged)
        config = replace(config, train=replace(config.train, warmup_steps=warmup_steps(config.train)))
        check_run_config(config)
    return config


def warmup_steps(t: TrainConfig) -> int:
    """``t.warmup_steps``, or by default 10% of ``max_steps``, at most 200."""
    return t.warmup_steps if t.warmup_steps is not None else min(200, t.max_steps // 10)


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def with_model(config: RunConfig, model: ModelConfig) -> RunConfig:
    return replace(config, model=model)


def to_json(config: RunConfig) -> str:
    return json.dumps(config_io.to_dict(config), indent=2)

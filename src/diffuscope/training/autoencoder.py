"""Training the latent space's autoencoder (``diffuscope autoencoder``), with ``train``'s run-folder guarantees.

RUN_DIR/config.json (the resolved config), metrics.csv (training loss), eval.csv (held-out PSNR, latent std and
scale factor per evaluation), checkpoints/step-NNNNNNN/ written atomically by ``checkpoint.save_checkpoint``;
``resume="latest"`` continues exactly: batch order and posterior noise are pure functions of (seed, step).

Held-out images: the data set's test split plus a fixed 10% of its train split (``split.held_out_mask`` with one
class), never trained on. Each checkpoint's config carries the latent scale factor, 1 / std of the posterior means
over the training images (Rombach et al. 2022 App. G; Stable Diffusion's 0.18215), so a diffusion model trained
on ``encode(x) * scale`` sees latents of about unit variance.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from diffuscope.checks.errors import UsageError
from diffuscope.data import batch_indices, load_dataset
from diffuscope.data.split import held_out_mask
from diffuscope.io import checkpoint as ckpt_io
from diffuscope.io import config as config_io
from diffuscope.io.device import pick_device
from diffuscope.nets.autoencoder import Autoencoder, AutoencoderConfig, check_autoencoder_config, kl_divergence
from diffuscope.training.config import DataConfig
from diffuscope.training.rundir import MetricsLog, check_run_dir, find_resume, prune_checkpoints, run_lock

RUN_KIND = "autoencoder"  # config.json's run.kind: tells an autoencoder checkpoint from a diffusion model's
METRICS_FIELDS = ("step", "loss", "l1", "kl", "lr", "grad_norm", "images_per_s", "elapsed_s")
EVAL_FIELDS = ("step", "psnr_heldout", "psnr_train", "latent_std", "scale_factor", "elapsed_s")
VAL_SEED = 7_919  # the held-out tenth of the train split (a fixed hash, not the training seed)


@dataclass(frozen=True)
class AutoencoderTrainConfig:
    max_steps: int = 6000
    batch_size: int = 32
    lr: float = 2e-3  # AdamW peak; linear warm-up, cosine decay to lr_min_ratio * lr
    warmup_steps: int = 100
    lr_min_ratio: float = 0.05
    kl_weight: float = 1e-6  # LDM's KL weight (per latent-dimension sum vs per-pixel-sum reconstruction loss)
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0
    val_fraction: float = 0.1
    eval_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 0
    log_every: int = 50
    device: str = "auto"
    threads: int = 0


@dataclass(frozen=True)
class AutoencoderRunConfig:
    data: DataConfig = field(default_factory=lambda: DataConfig(name="emoji"))
    model: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    train: AutoencoderTrainConfig = field(default_factory=AutoencoderTrainConfig)


@dataclass
class AutoencoderResult:
    run_dir: Path
    steps: int
    checkpoint: Path
    psnr_heldout: float
    scale_factor: float
    latent_std: float
    n_train: int
    n_heldout: int
    elapsed_s: float


def levels_for(downsample: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(channel_mult, num_res_blocks) for a downsampling factor 1, 2, 4 or 8: one level per halving, widths doubling
    up to 4x, two ResBlocks at the latent level and none above it (``AutoencoderConfig``)."""
    if downsample not in (1, 2, 4, 8):
        raise UsageError(f"downsample must be 1, 2, 4 or 8, got {downsample}")
    levels = downsample.bit_length()
    return tuple(min(2**i, 4) for i in range(levels)), (0,) * (levels - 1) + (2,)


def check_train_config(t: AutoencoderTrainConfig) -> None:
    from diffuscope.checks import validate

    validate.check_ranges(t, "train")  # every field finite and in its documented range (validate.RANGES)
    for name in ("max_steps", "batch_size"):
        if getattr(t, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(t, name)}")
    if t.lr <= 0:
        raise UsageError(f"lr must be positive, got {t.lr}")
    if not 0 < t.val_fraction < 1:
        raise UsageError(f"val_fraction must be in (0, 1), got {t.val_fraction}")
    if not 0 <= t.ema_decay < 1:
        raise UsageError(f"ema_decay must be in [0, 1), got {t.ema_decay}")


def split_images(config: AutoencoderRunConfig) -> tuple[Tensor, Tensor]:
    """(train images, held-out images): train split minus a fixed tenth; held out = that tenth + the test split."""
    d = config.data
    train = load_dataset(d.name, split="train", image_size=d.image_size, channels=d.channels)
    test = load_dataset(d.name, split="test", image_size=d.image_size, channels=d.channels)
    frac = config.train.val_fraction
    mask = held_out_mask(np.zeros(len(train), dtype=np.int64), lambda n: max(1, round(n * frac)), seed=VAL_SEED)
    mask_t = torch.from_numpy(mask)
    return train.images[~mask_t], torch.cat([train.images[mask_t], test.images])


def psnr(reconstruction: Tensor, target: Tensor) -> Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (peak-to-peak 2): [N]."""
    mse = (reconstruction.clamp(-1, 1) - target).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-12))


@torch.no_grad()
def evaluate(model: Autoencoder, images: Tensor, batch_size: int = 256) -> tuple[float, Tensor]:
    """(mean per-image PSNR of reconstructions from the posterior mean, the posterior means) on ``images``."""
    model.eval()
    device = next(model.parameters()).device
    scores, means = [], []
    for chunk in images.split(batch_size):
        chunk = chunk.to(device)
        mean, _ = model.encode(chunk)
        scores.append(psnr(model.decode(mean), chunk).cpu())
        means.append(mean.cpu())
    return float(torch.cat(scores).mean()), torch.cat(means)


def lr_factor(step: int, t: AutoencoderTrainConfig) -> float:
    if t.warmup_steps and step < t.warmup_steps:
        return (step + 1) / t.warmup_steps
    progress = (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps)
    return t.lr_min_ratio + (1 - t.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def step_generator(seed: int, step: int) -> torch.Generator:
    """Posterior noise of step ``step``: a pure function of (seed, step)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7_919 + 54_321) % (2**63 - 1))


def train_autoencoder(config: AutoencoderRunConfig, run_dir: str | Path, *, resume: str | None = None,
                      progress: bool = True, stop_at: int | None = None) -> AutoencoderResult:
    """Train the autoencoder ``config`` describes into ``run_dir``; ``resume`` and ``stop_at`` as in ``train``."""
    from diffuscope.checks import validate

    t = config.train
    check_train_config(t)
    validate.check_ranges(config.data, "data")
    # the sizes before any image is loaded or resized (--image-size 100000 would resize the data first)
    check_autoencoder_config(replace(config.model, image_size=config.data.image_size or config.model.image_size),
                             count=False)
    run_dir = Path(run_dir)
    check_run_dir(run_dir, resume)
    if t.threads:
        torch.set_num_threads(t.threads)
    train_images, heldout = split_images(config)
    model_config = replace(config.model, image_size=int(train_images.shape[-1]),
                           in_channels=int(train_images.shape[1]))
    check_autoencoder_config(model_config)  # with the parameter count (meta device) and the weights' memory
    with run_lock(run_dir, resume):  # the exclusive lock on RUN_DIR for the whole run, then the check again
        return _train(config, model_config, run_dir, resume, progress, stop_at, train_images, heldout)


def _train(config: AutoencoderRunConfig, model_config: AutoencoderConfig, run_dir: Path, resume: str | None,
           progress: bool, stop_at: int | None, train_images: Tensor, heldout: Tensor) -> AutoencoderResult:
    from diffuscope.training.loop import TrainingError, ema_decay_at, ema_update

    t = config.train
    resolved = replace(config, model=model_config)
    device = pick_device(t.device)
    ckpt_dir = run_dir / "checkpoints"
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_io.clean_stale_temp(ckpt_dir)

    torch.manual_seed(t.seed)
    model = Autoencoder(model_config).to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=t.lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, t))
    start, elapsed_before = 0, 0.0
    source = find_resume(run_dir, resume) if resume else None
    if source is not None:
        ckpt_io.read_manifest(source)
        ckpt_io.load_weights(model, source / "model.safetensors")
        ckpt_io.load_weights(ema, source / "ema.safetensors")
        state = ckpt_io.load_training_state(source)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["lr_schedule"])
        start, elapsed_before = int(state["step"]), float(state.get("elapsed_s", 0.0))
    ckpt_io.write_json_atomic(run_dir / "config.json", {**config_io.to_dict(resolved), "kind": RUN_KIND})
    log = MetricsLog(run_dir / "metrics.csv", start, METRICS_FIELDS)
    eval_log = MetricsLog(run_dir / "eval.csv", start, EVAL_FIELDS)

    images = train_images.to(device)
    end = min(t.max_steps, stop_at or t.max_steps)
    bar = tqdm(total=end, initial=start, disable=not progress, unit="step", dynamic_ncols=True)
    t0 = window_t = time.perf_counter()
    window_n, last, last_eval = 0, None, None
    model.train()
    for step in range(start, end):
        x = images[batch_indices(len(images), t.batch_size, t.seed, step).to(device)]
        rec, mean, logvar = model(x, generator=step_generator(t.seed, step))
        l1 = (rec - x).abs().mean()
        kl = kl_divergence(mean, logvar).mean()
        # LDM sums both terms over each image; per pixel value the KL weight is divided by the pixel count
        loss = l1 + t.kl_weight * kl / x[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip or float("inf"))
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            raise TrainingError(f"non-finite loss or gradient at step {step + 1}: training stopped; the last good "
                                "checkpoint is kept")
        opt.step()
        sched.step()
        ema_update(ema, model, ema_decay_at(step, t.ema_decay))
        done = step + 1
        window_n += t.batch_size
        if done % max(1, t.log_every) == 0 or done == end:
            now = time.perf_counter()
            rate, window_t, window_n = window_n / max(now - window_t, 1e-9), now, 0
            log.write({"step": done, "loss": f"{loss.item():.6f}", "l1": f"{l1.item():.6f}",
                       "kl": f"{kl.item():.4f}", "lr": f"{opt.param_groups[0]['lr']:.6g}",
                       "grad_norm": f"{float(grad_norm):.4f}", "images_per_s": f"{rate:.1f}",
                       "elapsed_s": f"{elapsed_before + now - t0:.1f}"})
            bar.set_postfix(l1=f"{l1.item():.4f}", img_s=f"{rate:.0f}")
        bar.update(1)
        save = (t.checkpoint_every and done % t.checkpoint_every == 0) or done == end
        if (t.eval_every and done % t.eval_every == 0) or save:
            elapsed = elapsed_before + time.perf_counter() - t0
            last_eval = _evaluate_and_log(ema, images, heldout, eval_log, done, elapsed)
            model.train()
        if save:
            state = {"optimizer": opt.state_dict(), "lr_schedule": sched.state_dict(), "step": done,
                     "rng_cpu": torch.get_rng_state(), "elapsed_s": elapsed_before + time.perf_counter() - t0}
            run_info = {**config_io.to_dict(resolved), "kind": RUN_KIND, **last_eval}
            last = _save(ckpt_dir, done, model, ema, model_config, run_info, state, TrainingError)
            prune_checkpoints(ckpt_dir, t.keep_checkpoints)
    bar.close()
    if last is None:  # resumed at (or past) the end
        last = ckpt_io.list_checkpoints(ckpt_dir)[-1]
        last_eval = _evaluate_and_log(ema, images, heldout, None, end, elapsed_before)
    return AutoencoderResult(run_dir, end, last, last_eval["psnr_heldout"], last_eval["scale_factor"],
                             last_eval["latent_std"], len(train_images), len(heldout),
                             elapsed_before + time.perf_counter() - t0)  # the run's training time, resumes included


def _evaluate_and_log(ema: Autoencoder, images: Tensor, heldout: Tensor, log: MetricsLog | None, step: int,
                      elapsed: float) -> dict[str, float]:
    psnr_heldout, _ = evaluate(ema, heldout)
    psnr_train, means = evaluate(ema, images)
    std = float(means.std())
    info = {"psnr_heldout": psnr_heldout, "psnr_train": psnr_train, "latent_std": std, "scale_factor": 1.0 / std}
    if log is not None:
        log.write({"step": step, **{k: f"{v:.6g}" for k, v in info.items()}, "elapsed_s": f"{elapsed:.1f}"})
        tqdm.write(f"step {step}: held-out PSNR {psnr_heldout:.2f} dB (train {psnr_train:.2f}), "
                   f"latent std {std:.4f}")
    return info


def _save(ckpt_dir: Path, step: int, model, ema, model_config: AutoencoderConfig, run_info: dict, state: dict,
          error: type[Exception]) -> Path:
    return ckpt_io.save_or_stop(ckpt_dir, step, error, model=model, ema=ema, model_config=model_config,
                                run_config=run_info, state=state)

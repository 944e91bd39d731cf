"""One readable training loop (nanoGPT-style): sample noise levels, denoise, weight the loss, step, EMA, log.

Every random draw of step s (batch order, noise levels, noise, condition dropout) is a pure function of
(seed, s), so a resumed run sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from diffuscope.checks.errors import UsageError
from diffuscope.core.conditioning import ClassCond, Cond, as_cond
from diffuscope.core.events import CancelToken, Observer, Progress, report
from diffuscope.core.precond import Denoiser, make_denoiser
from diffuscope.core.schedules import sample_training_sigmas
from diffuscope.data import ImageDataset, batch_indices, load_dataset
from diffuscope.io import checkpoint as ckpt_io
from diffuscope.io import config as config_io
from diffuscope.io.device import pick_device
from diffuscope.models.config import ModelConfig, build_denoiser, check_model, check_model_config, fit_to_data
from diffuscope.training.config import RunConfig, TrainConfig, warmup_steps
from diffuscope.training.distributed import (
    Dist,
    average_gradients,
    barrier,
    init_distributed,
    mean_across,
    replicas_identical,
    shard,
    shutdown,
)
from diffuscope.training.latent import encode_images, open_autoencoder
from diffuscope.training.rundir import MetricsLog, check_run_dir, find_resume, prune_checkpoints, restore, run_lock


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    final_loss: float
    checkpoint: Path
    images_per_s: float
    elapsed_s: float


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator for everything random in training step ``step``: a pure function of (seed, step)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7_919 + 12_345) % (2**63 - 1))


def lr_factor(step: int, t: TrainConfig) -> float:
    """Linear warm-up, then constant or cosine decay to ``lr_min_ratio``."""
    warmup = warmup_steps(t)
    if warmup and step < warmup:
        return (step + 1) / warmup
    if t.lr_decay == "none":
        return 1.0
    progress = (step - warmup) / max(1, t.max_steps - warmup)
    return t.lr_min_ratio + (1 - t.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    ema_params = list(ema.parameters())
    torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1 - decay)
    for eb, mb in zip(ema.buffers(), model.buffers()):
        eb.copy_(mb)


def ema_decay_at(step: int, decay: float) -> float:
    """Warm-up of the EMA decay (as in many DDPM codebases): average fewer steps early in training."""
    return min(decay, (1 + step) / (10 + step))


def training_batch(
    data: ImageDataset, images: Tensor, conds: Cond | Tensor | None, denoiser: Denoiser, t: TrainConfig, step: int,
    null: Cond | None = None,
) -> tuple[Tensor, Tensor, Tensor, Cond | None]:
    """(x0, sigma, noise, cond) for step ``step``: all randomness from ``step_generator(seed, step)``. ``conds``
    holds one condition per image (int labels are class conditions); a dropped row gets ``null`` (default: the null
    class), so classifier-free guidance can use it (Ho & Salimans 2022)."""
    idx = batch_indices(len(data), t.batch_size, t.seed, step).to(images.device)
    g = step_generator(t.seed, step)
    sigma = sample_training_sigmas(denoiser.schedule, t.batch_size, generator=g, p_mean=t.p_mean, p_std=t.p_std)
    noise = torch.randn((t.batch_size, *images.shape[1:]), generator=g)
    drop = torch.rand(t.batch_size, generator=g) < t.cond_dropout
    conds = as_cond(conds)
    cond = None
    if conds is not None:
        null = null if null is not None else ClassCond(torch.tensor([data.num_classes]))
        cond = conds[idx].where(drop, null)
    dev = images.device
    return images[idx], sigma.to(dev), noise.to(dev), cond


def preview(denoiser: Denoiser, model_config: ModelConfig, t: TrainConfig, path: Path, device: torch.device,
            prompts: list[str] | None = None, codec=None) -> None:
    """A grid of samples from the EMA model, fixed seeds, so grids are comparable: each class in a column (or the
    first training prompts of a text model; 16 images of an unconditional one); a latent model's are decoded."""
    from diffuscope.core.model import DiffusionModel
    from diffuscope.generation.generate import GenerationRequest, generate
    from diffuscope.models.config import build_conditioner
    from diffuscope.viz import save_grid

    u = model_config.unet
    conditioner = build_conditioner(model_config)
    model = DiffusionModel(denoiser, conditioner, (u.in_channels, u.image_size, u.image_size), codec=codec)
    names = list(prompts or model_config.class_names)[:16]
    scale = max(1, 64 // model.image_shape[-1])
    # a preview grid, never reproduced with --from: whole batches per network call (core/batch_invariance.py)
    request = GenerationRequest(sampler=t.sample_sampler, steps=t.sample_steps, seed=0, device=device,
                                batch_invariant=False)
    if not conditioner.takes_prompts:
        gen = generate(model, replace(request, n=16))
        save_grid(gen.images, path, nrow=4, scale=scale)
        return
    per_prompt = 4 if len(names) <= 10 else 1
    gen = generate(model, replace(request, prompts=tuple(p for _ in range(per_prompt) for p in names),
                                  guidance=t.sample_guidance))
    save_grid(gen.images, path, nrow=len(names), scale=scale)


def training_conditions(model_config: ModelConfig, data: ImageDataset, device) -> tuple[Cond | None, Cond | None]:
    """(one condition per training image, the null condition) for the model's conditioner: class labels, the
    images' prompts through the text encoder (encoded once: the encoder is frozen), or none."""
    from diffuscope.models.config import build_conditioner

    conditioner = build_conditioner(model_config)
    if not conditioner.takes_prompts:
        return None, None
    if conditioner.has_classes:
        return ClassCond(data.labels).to(device), conditioner.null(1).to(device)
    prompts = [data.class_names[int(k)] for k in data.labels]
    return conditioner.encode(prompts).to(device), conditioner.null(1).to(device)


def train(
    config: RunConfig,
    run_dir: str | Path,
    *,
    resume: str | None = None,
    stop_at: int | None = None,
    on_event: Observer | None = None,
    cancel: CancelToken | None = None,
) -> TrainResult:
    """Train the model ``config`` describes into ``run_dir`` (see README: the run folder).

    ``resume``: "latest" (the newest complete checkpoint of ``run_dir``) or a checkpoint folder. ``stop_at`` ends
    the run early after that step (with a checkpoint), as if it had been interrupted there: the LR schedule still
    runs to ``max_steps``, so a resumed run continues exactly. Under torchrun/accelerate every process runs this;
    only rank 0 writes. ``on_event`` receives a 'train' Progress event per step (rank 0; data: loss, images/s);
    ``cancel`` stops the run after the step in progress (events.py), keeping the last checkpoint.
    """
    t = config.train
    run_dir = Path(run_dir)
    if t.threads:
        torch.set_num_threads(t.threads)
    data = load_dataset(config.data.name, split="train", image_size=config.data.image_size,
                        channels=config.data.channels)
    check_run_dir(run_dir, resume)
    codec = None
    size, channels = data.image_size, data.channels
    if config.model.autoencoder:  # a latent model (training/latent.py)
        source = find_resume(run_dir, resume) if resume else None
        codec = open_autoencoder(config.model.autoencoder, data, resume_from=source)
        channels, size, _ = codec.latent_shape
        if source is None:  # record the autoencoder checkpoint itself (a resumed run keeps what it recorded)
            config = replace(config, model=replace(config.model, autoencoder=str(codec.path)))
    model_config = fit_to_data(config.model, image_size=size, channels=channels, class_names=data.class_names)
    check_model_config(model_config)
    check_model(model_config)
    ddp, device = init_distributed(pick_device(t.device))
    try:
        with run_lock(run_dir, resume, enabled=ddp.is_main):  # the exclusive lock, then the check again
            return _train(config, model_config, data, run_dir, ddp, device, resume, stop_at, on_event, cancel,
                          codec)
    finally:
        shutdown(ddp)


def _train(config: RunConfig, model_config: ModelConfig, data: ImageDataset, run_dir: Path, ddp: Dist,
           device: torch.device, resume: str | None, stop_at: int | None, on_event: Observer | None,
           cancel: CancelToken | None, codec=None) -> TrainResult:
    t = config.train
    if t.batch_size % ddp.world_size:
        raise UsageError(f"--batch-size {t.batch_size} must be divisible by the number of processes ({ddp.world_size})")
    barrier(ddp)  # every rank has checked the run folder before rank 0 writes to it
    ckpt_dir = run_dir / "checkpoints"
    if ddp.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt_io.clean_stale_temp(ckpt_dir)
    barrier(ddp)

    torch.manual_seed(t.seed)  # the initial weights are a function of the seed, identical on every rank
    denoiser = build_denoiser(model_config).to(device)
    ema_net = copy.deepcopy(denoiser.net).requires_grad_(False)
    ema_denoiser = make_denoiser(model_config.parametrization, ema_net, denoiser.schedule,
                                 sigma_data=model_config.sigma_data).eval()
    params = list(denoiser.net.parameters())
    opt = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.adam_betas), weight_decay=t.weight_decay)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, t))

    start, elapsed_before = 0, 0.0  # training seconds of the run so far (carried across resumes)
    source = find_resume(run_dir, resume) if resume else None
    if source is not None:
        state = restore(source, denoiser.net, ema_net, opt, lr_sched)
        torch.set_rng_state(state["rng_cpu"])
        start = int(state["step"])
        elapsed_before = float(state.get("elapsed_s", 0.0))
    resolved = replace(config, model=model_config)
    log = None
    if ddp.is_main:
        ckpt_io.write_json_atomic(run_dir / "config.json", config_io.to_dict(resolved))
        log = MetricsLog(run_dir / "metrics.csv", start)
        (run_dir / "samples").mkdir(exist_ok=True)
        if ddp.enabled:
            print(f"data-parallel: {ddp.world_size} processes, global batch {t.batch_size} "
                  f"({t.batch_size // ddp.world_size} per process), lr {t.lr:g}")

    images = data.images if codec is None else encode_images(codec, data.images)  # latents: encoded once
    images = images.to(device)
    conds, null = training_conditions(model_config, data, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.precision == "bf16")
    denoiser.train()
    end = min(t.max_steps, stop_at or t.max_steps)
    t0 = window_t = time.perf_counter()
    window_n, rate, loss_value, last_ckpt, bad = 0, 0.0, float("nan"), None, 0
    for step in range(start, end):
        x0, sigma, noise, cond = (shard(v, ddp) for v in training_batch(data, images, conds, denoiser, t, step, null))
        with autocast:
            loss = denoiser.loss(x0, sigma, noise, cond, min_snr_gamma=t.min_snr_gamma).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(params, ddp)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip or float("inf"))
        loss_all = mean_across(loss.detach(), ddp)
        if not (torch.isfinite(loss_all) and torch.isfinite(grad_norm)):
            bad += 1
            what = "loss" if not torch.isfinite(loss_all) else "gradient"
            if bad > t.max_bad_batches:
                raise TrainingError(f"non-finite {what} at step {step + 1}: training stopped; the last good "
                                    f"checkpoint is kept (see --max-bad-batches to skip a few bad batches)")
            print(f"step {step + 1}: non-finite {what}, batch skipped ({bad}/{t.max_bad_batches})", file=sys.stderr)
            opt.zero_grad(set_to_none=True)
            lr_sched.step()
            continue
        opt.step()
        lr_sched.step()
        ema_update(ema_net, denoiser.net, ema_decay_at(step, t.ema_decay))
        done = step + 1
        loss_value = loss_all.item()
        window_n += t.batch_size
        if not ddp.is_main:
            continue
        if done % max(1, t.log_every) == 0 or done == end:
            now = time.perf_counter()
            rate = window_n / max(now - window_t, 1e-9)
            window_t, window_n = now, 0
            log.write({"step": done, "loss": f"{loss_value:.6f}", "lr": f"{opt.param_groups[0]['lr']:.6g}",
                       "grad_norm": f"{float(grad_norm):.4f}", "images_per_s": f"{rate:.1f}",
                       "elapsed_s": f"{elapsed_before + now - t0:.1f}"})
        report(on_event, cancel, Progress("train", done, end, f"loss {loss_value:.4f}, {rate:.0f} img/s",
                                          {"loss": loss_value, "images_per_s": rate}))
        if (t.sample_every and done % t.sample_every == 0) or done == end:
            preview(ema_denoiser, model_config, t, run_dir / "samples" / f"{ckpt_io.checkpoint_name(done)}.png",
                    device, codec=codec)
        if (t.checkpoint_every and done % t.checkpoint_every == 0) or done == end:
            state = {"optimizer": opt.state_dict(), "lr_schedule": lr_sched.state_dict(), "step": done,
                     "data_position": done * t.batch_size, "rng_cpu": torch.get_rng_state(),
                     "world_size": ddp.world_size, "elapsed_s": elapsed_before + time.perf_counter() - t0}
            last_ckpt = _save(ckpt_dir, done, denoiser.net, ema_net, model_config, resolved, state, codec)
            prune_checkpoints(ckpt_dir, t.keep_checkpoints)
    if ddp.enabled:
        same = replicas_identical(params, ddp)
        if ddp.is_main:
            print(f"replicas identical after step {end}: {'yes' if same else 'NO'}")
        if not same:
            raise TrainingError("data-parallel replicas diverged: their weights differ")
    if last_ckpt is None and ddp.is_main:  # resumed at (or past) the end: nothing left to do
        last_ckpt = ckpt_io.list_checkpoints(ckpt_dir)[-1]
    return TrainResult(run_dir, end, loss_value, last_ckpt, rate, time.perf_counter() - t0)


def _save(ckpt_dir: Path, step: int, net, ema_net, model_config: ModelConfig, resolved: RunConfig,
          state: dict, codec=None) -> Path:
    """Save a checkpoint; a full disk (or any OS error) leaves the previous one intact and stops clearly."""
    return ckpt_io.save_or_stop(ckpt_dir, step, TrainingError, model=net, ema=ema_net, model_config=model_config,
                                run_config=config_io.to_dict(resolved), state=state,
                                beside=() if codec is None else (codec,))

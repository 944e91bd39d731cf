"""Trajectory distillation at the sampling time steps: a K-step student from a teacher (issue 32).

The method is SFD (Zhou et al. 2024, "Simple and Fast Distillation of Diffusion Models", Sec. 3) with the DDIM
target of progressive distillation (Salimans & Ho 2022, Sec. 3 and Algorithm 2), written in sigma space:

* the student's grid sigma_0 > ... > sigma_K = 0 is the teacher's grid at K steps (its default formula, Karras for
  EDM models, or one of its tuned grids);
* the teacher solves each interval [sigma_i, sigma_{i+1}] finely: M Heun sub-steps (Karras et al. 2022, Algorithm 2
  without churn) on the teacher's own *guided* denoiser (classifier-free guidance at the model's default scale), on
  the sub-grid of EDM Eq. 5 restricted to the interval;
* the student takes one Euler (= DDIM at eta 0) step from the teacher's state x_i (EDM Eq. 3, Algorithm 1):

      x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (x_i - D) / sigma_i

  which lands on the teacher's x_{i+1} exactly when D is (solve the step for D; Salimans & Ho 2022, Alg. 2's
  x~ target, here with alpha = 1):

      D* = x_i - sigma_i (x_{i+1} - x_i) / (sigma_{i+1} - sigma_i)                                  (target)

  (for sigma_K = 0 it is the teacher's final image x_K);
* loss = lambda(sigma_i) ||D_theta(x_i, sigma_i, c) - D*||^2 with lambda = 1 / c_out(sigma_i)^2 (EDM Eq. 8): the
  network's own target space, the weighting the teacher was trained with.

The student is initialised from the teacher's (EMA) weights and learns the *guided* solution: it samples with
guidance 1 (its run config records that, with its teacher, K and its grid). Teacher trajectories are computed in
chunks of ``chunk`` noises and reused for ``chunk_steps`` training steps (a chunk holds K training pairs per noise);
every random draw is a pure function of (seed, step) or (seed, chunk), so a resumed run recomputes its chunk and
sees exactly the pairs an uninterrupted run would have seen.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffuscope.checks import limits, validate
from diffuscope.checks.errors import UsageError, choices_error, one_line, quote
from diffuscope.core.defaults import DEFAULT_GUIDANCE
from diffuscope.core.events import CancelToken, Observer, Progress, report
from diffuscope.core.schedules import GRIDS, TUNED, check_sigmas, make_grid
from diffuscope.grids.store import FORMAT, TUNED_FILE, VERSION, load_tuned, round_sigmas
from diffuscope.io import checkpoint as ckpt_io
from diffuscope.io import config as config_io
from diffuscope.io.device import pick_device
from diffuscope.models.config import ModelConfig
from diffuscope.samplers.base import denoise, euler_step
from diffuscope.training.loop import TrainingError, ema_decay_at, ema_update, step_generator
from diffuscope.training.rundir import MetricsLog, check_run_dir, find_resume, prune_checkpoints, restore, run_lock

STUDENT_SAMPLER = "Euler"  # the student's own step (= DDIM at eta 0 in sigma space)
TEACHER_SOLVER = "Heun"
METRICS_FIELDS = ("step", "loss", "lr", "grad_norm", "pairs_per_s", "elapsed_s")
TEACHER_BATCH = 256  # noises per teacher call while a chunk is solved
MAX_SUBSTEPS, MAX_CHUNK = limits.MAX_DISTILL_SUBSTEPS, limits.MAX_DISTILL_CHUNK
# fields a resumed run may change; every other one must be what the run recorded
RESUMABLE_CHANGES = ("max_steps", "checkpoint_every", "keep_checkpoints", "log_every", "device", "threads")


@dataclass(frozen=True)
class DistillConfig:
    teacher: str = "mnist"  # a built-in model name, run folder or checkpoint folder (diffuscope's own models)
    steps: int = 4  # K: the student's sampling steps
    spacing: str | None = None  # the student's grid: None = the teacher's default formula; karras, logsnr, tuned
    substeps: int = 8  # M: the teacher's Heun sub-steps per interval [sigma_i, sigma_{i+1}]
    guidance: float | None = None  # the teacher's guidance scale; None = the model's default (1.25; 1 unconditional)
    max_steps: int = 2000  # optimizer steps
    batch_size: int = 64  # training pairs (x_i, i) per step
    lr: float = 1e-4  # AdamW, after a linear warm-up, constant
    warmup_steps: int | None = None  # None = min(100, max_steps // 10), resolved and recorded when the run starts
    ema_decay: float = 0.999  # warmed up as in training (loop.ema_decay_at)
    grad_clip: float = 1.0
    chunk: int = 256  # teacher trajectories per chunk
    chunk_steps: int = 50  # training steps on one chunk before the next is solved
    seed: int = 0
    checkpoint_every: int = 500  # the last step is always saved
    keep_checkpoints: int = 0  # 0 = keep all
    log_every: int = 50
    device: str = "auto"
    threads: int = 0


@dataclass
class DistillResult:
    run_dir: Path
    steps: int
    final_loss: float
    checkpoint: Path
    pairs_per_s: float
    elapsed_s: float
    teacher_s: float  # seconds spent solving teacher trajectories in this process


_RANGES = {"steps": (1, limits.MAX_STEPS), "substeps": (1, MAX_SUBSTEPS), "max_steps": (1, validate.BIG),
           "batch_size": (1, limits.MAX_BATCH_SIZE), "chunk": (1, MAX_CHUNK), "chunk_steps": (1, validate.BIG),
           "seed": (0, 2**32 - 1), "checkpoint_every": (0, validate.BIG), "keep_checkpoints": (0, validate.BIG),
           "log_every": (0, validate.BIG), "threads": (0, 1024), "warmup_steps": (0, validate.BIG)}


def check_distill_config(config: DistillConfig) -> None:
    """Every field in its range (one line naming the field and the valid range), before any work."""
    for name, (lo, hi) in _RANGES.items():
        value = getattr(config, name)
        if value is None and name == "warmup_steps":
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"distill.{name} must be an integer in {lo}..{hi}, got {quote(value)}")
        validate.check_value(f"distill.{name}", value, validate.Range(lo, hi))
    validate.check_value("distill.lr", config.lr, validate.Range(0, 1, lo_open=True))
    validate.check_value("distill.ema_decay", config.ema_decay, validate.Range(0, 1, hi_open=True))
    validate.check_value("distill.grad_clip", config.grad_clip, validate.Range(0, 1e6))
    if config.guidance is not None:
        validate.check_value("distill.guidance", config.guidance, validate.Range(0, limits.MAX_GUIDANCE))
    if config.device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"unknown device {quote(config.device)} (valid: auto, cpu, cuda)")
    if config.spacing is not None and config.spacing not in GRIDS:
        raise choices_error("--spacing", config.spacing, GRIDS)
    if not isinstance(config.teacher, str) or not config.teacher.strip():
        raise UsageError("--model (the teacher) must name a model")


# --- the teacher's fine solution and the student's target ---------------------------------------------------------


def interval_grid(sigma: float, sigma_next: float, substeps: int, rho: float = 7.0) -> list[float]:
    """``substeps`` + 1 noise levels from ``sigma`` down to ``sigma_next``, spaced as EDM Eq. 5 (rho = 7) inside
    the interval; ends exactly at ``sigma_next`` (which may be 0)."""
    a, b = sigma ** (1 / rho), sigma_next ** (1 / rho)
    inner = [(a + j / substeps * (b - a)) ** rho for j in range(1, substeps)]
    return [sigma, *inner, sigma_next]


@torch.no_grad()
def solve_interval(denoiser, x: Tensor, sigma: float, sigma_next: float, cond=None, substeps: int = 8) -> Tensor:
    """The teacher's state at ``sigma_next`` from ``x`` at ``sigma``: ``substeps`` Heun steps (Karras et al. 2022,
    Algorithm 2 without churn; its step to sigma = 0 is the Euler step, line 8, landing on D)."""
    for s, s_next in pairwise(interval_grid(sigma, sigma_next, substeps)):
        d = denoise(denoiser, x, s, cond)
        if s_next == 0:
            x = d
            continue
        x_2 = euler_step(x, d, s, s_next)
        d_2 = denoise(denoiser, x_2, s_next, cond)
        x = x + (s_next - s) * 0.5 * ((x - d) / s + (x_2 - d_2) / s_next)  # Algorithm 2, line 11 (trapezoid)
    return x


@torch.no_grad()
def teacher_trajectory(denoiser, x: Tensor, sigmas, cond=None, substeps: int = 8) -> Tensor:
    """The teacher's states at every sigma of the student's grid, [K + 1, B, ...]: x_0 = ``x`` (noise at sigma_0),
    x_{i+1} = the fine solution of [sigma_i, sigma_{i+1}] from x_i."""
    sig = check_sigmas(torch.as_tensor(sigmas, dtype=torch.float64))
    states = [x]
    for s, s_next in pairwise(sig):
        states.append(solve_interval(denoiser, states[-1], s, s_next, cond, substeps))
    return torch.stack(states)


def euler_target(x: Tensor, x_next: Tensor, sigma: Tensor | float, sigma_next: Tensor | float) -> Tensor:
    """D* = x_i - sigma_i (x_{i+1} - x_i) / (sigma_{i+1} - sigma_i): the denoised output whose Euler step
    x_i + (sigma_{i+1} - sigma_i) (x_i - D) / sigma_i lands on x_{i+1} (EDM Eq. 3; Salimans & Ho 2022, Alg. 2).
    ``sigma``/``sigma_next`` are floats or one per sample [B]; computed in float64, returned in x's dtype."""
    shape = (-1, *([1] * (x.ndim - 1)))
    s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(shape)
    s_next = torch.as_tensor(sigma_next, dtype=torch.float64, device=x.device).reshape(shape)
    x64, next64 = x.to(torch.float64), x_next.to(torch.float64)
    return (x64 - s * (next64 - x64) / (s_next - s)).to(x.dtype)


def distill_loss(student, x: Tensor, sigma: Tensor, target: Tensor, cond=None) -> Tensor:
    """Per-sample loss [B]: ||F - (D* - c_skip x) / c_out||^2 = ||D - D*||^2 / c_out^2 (EDM Eq. 7-8)."""
    f, c = student.raw(x, sigma, cond)
    col = (-1, *([1] * (x.ndim - 1)))
    f_target = (target - c.c_skip.to(x.dtype).reshape(col) * x) / c.c_out.to(x.dtype).reshape(col)
    return ((f.float() - f_target.float()) ** 2).flatten(1).mean(1)


# --- the teacher, the grid and the record -------------------------------------------------------------------------


def refuse_untrainable(ref: str) -> None:
    """One line, before any work, for a teacher `distill` cannot train from (a diffusers pipeline folder)."""
    if (Path(ref) / "model_index.json").is_file():
        raise UsageError(f"--model {ref} is a diffusers pipeline: distill trains diffuscope's own models only (a "
                         f"built-in model name, a run folder or a checkpoint folder)")


def load_teacher(ref: str, device: str | torch.device = "cpu"):
    """(the teacher DiffusionModel, its checkpoint folder, the sha256 of its EMA weights); anything that is not a
    diffuscope model with a network to copy is refused in one line."""
    from diffuscope.models.load import load_model

    refuse_untrainable(ref)
    ckpt = ckpt_io.resolve_checkpoint(ref)
    sha = ckpt_io.read_manifest(ckpt)["files"]["ema.safetensors"]["sha256"]
    teacher = load_model(ref, device=device)
    if not isinstance(teacher.config, ModelConfig) or not hasattr(teacher.denoiser, "net"):
        raise UsageError(f"--model {ref} is not a diffuscope model with its own network: distill cannot train it")
    return teacher, ckpt, sha


def teacher_guidance(teacher, config: DistillConfig) -> float:
    """The teacher's guidance scale: the asked one, else the model's default (``sample``'s: 1.25 with a null
    condition, 1 without)."""
    has_null = teacher.conditioner.has_null
    scale = config.guidance if config.guidance is not None else (DEFAULT_GUIDANCE if has_null else 1.0)
    if scale != 1 and not has_null:
        raise UsageError(f"--guidance {scale:g}: this teacher has no null condition (an unconditional model): "
                         f"guidance must be 1")
    return float(scale)


def student_grid(teacher, ckpt: Path, steps: int, spacing: str | None) -> list[float]:
    """The student's K-step grid, rounded as tuned grids are stored (grids/store.py), so that the grid it trains
    on is the very grid it samples with: the teacher's formula grid, or for "tuned" the teacher's tuned grid at K
    steps (its Euler grid if it has one, else another sampler's)."""
    if spacing != TUNED:
        return round_sigmas(make_grid(teacher.schedule, steps, spacing).sigmas)
    grids = load_tuned(ckpt)["grids"]
    have = sorted({int(k) for table in grids.values() for k in table})
    for sampler in ("euler", *sorted(grids)):
        if str(steps) in grids.get(sampler, {}):
            return round_sigmas(grids[sampler][str(steps)])
    raise UsageError(f"--spacing tuned: the teacher has no tuned grid at {steps} steps (tuned: "
                     f"{', '.join(map(str, have)) or 'none'}); leave --spacing out for its default grid")


def student_record(teacher, teacher_ckpt: Path, sha: str, config: DistillConfig, sigmas: list[float],
                   guidance: float) -> dict[str, Any]:
    """The run config's ``student`` record (models/student.py reads it): how the student samples by default and
    what it was distilled from."""
    return {"steps": config.steps, "sampler": STUDENT_SAMPLER, "spacing": TUNED, "guidance": 1.0, "sigmas": sigmas,
            "teacher": {"name": teacher.name, "path": str(teacher_ckpt), "sha256": sha, "guidance": guidance,
                        "solver": TEACHER_SOLVER, "substeps": config.substeps},
            "note": "learned the teacher's guided ODE solution on this grid: samples with guidance 1"}


def tuned_document(sigmas: list[float], record: dict[str, Any]) -> dict[str, Any]:
    """tuned_grids.json holding the student's own grid for Euler at K steps (``--spacing tuned`` finds it)."""
    return {"format": FORMAT, "version": VERSION, "grids": {"euler": {str(len(sigmas) - 1): sigmas}},
            "tuning": {"euler": [{"source": "distill", "teacher": record["teacher"]["name"],
                                  "teacher_sha256": record["teacher"]["sha256"],
                                  "note": "the distilled student's own grid (it was trained on it)"}]}}


@dataclass(frozen=True)
class TunedGridsFile:
    """A student's grid as its tuned grids (grids/store.py), written inside each checkpoint before its manifest."""

    document: dict[str, Any]

    def save_into(self, folder: Path) -> None:
        (Path(folder) / TUNED_FILE).write_text(json.dumps(self.document, indent=2))


# --- the run ------------------------------------------------------------------------------------------------------


def chunk_generator(seed: int, chunk: int) -> torch.Generator:
    """The CPU generator of chunk ``chunk``'s noises and conditions: a pure function of (seed, chunk)."""
    return torch.Generator().manual_seed((seed * 998_244_353 + chunk * 104_729 + 271_828) % (2**63 - 1))


def warmup(config: DistillConfig) -> int:
    """The LR warm-up: ``warmup_steps``, by default min(100, max_steps // 10) of the run's first ``max_steps`` (a
    resumed run that extends --max-steps keeps it, so its learning rate continues exactly)."""
    return config.warmup_steps if config.warmup_steps is not None else min(100, config.max_steps // 10)


def _parse_record(raw: Any, path: Path) -> DistillConfig:
    """The ``distill`` record of a run config (``raw``: its "run" table), typed and in range."""
    if not isinstance(raw, dict) or not isinstance(raw.get("distill"), dict):
        raise UsageError(f"--resume: {path} is not a distill run's config (no 'distill' record)")
    with validate.in_file(path):
        recorded = config_io.from_dict(DistillConfig, raw["distill"], "distill")
        check_distill_config(recorded)
    return recorded


def recorded_config(run_dir: str | Path) -> DistillConfig | None:
    """The DistillConfig a run folder recorded in its config.json (checked), or None where there is none: what
    ``--resume`` starts from, so flags left out keep the run's own values."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path} is unreadable: {one_line(str(e), 120)}") from None
    return _parse_record(raw, path)


def _recorded_config(source: Path, config: DistillConfig) -> DistillConfig:
    """On resume: the config the checkpoint recorded, where ``config`` may change only RESUMABLE_CHANGES (a
    warm-up left to its default takes the recorded one)."""
    from diffuscope.models.load import load_config

    recorded = _parse_record(load_config(source)[1], source / "config.json")
    if config.warmup_steps is None:
        config = replace(config, warmup_steps=recorded.warmup_steps)
    for name in DistillConfig.__dataclass_fields__:
        if name not in RESUMABLE_CHANGES and getattr(config, name) != getattr(recorded, name) and not (
                name == "teacher" and Path(config.teacher).resolve() == Path(recorded.teacher).resolve()):
            raise UsageError(f"--resume: {name} was {quote(getattr(recorded, name))} in this run, got "
                             f"{quote(getattr(config, name))} (only {', '.join(RESUMABLE_CHANGES)} may change)")
    return replace(recorded, **{n: getattr(config, n) for n in RESUMABLE_CHANGES})


def distill(config: DistillConfig, run_dir: str | Path, *, resume: str | None = None, stop_at: int | None = None,
            on_event: Observer | None = None, cancel: CancelToken | None = None) -> DistillResult:
    """Distill ``config.teacher`` into a K-step student in ``run_dir`` (config.json, metrics.csv,
    checkpoints/step-NNNNNNN/ with a manifest, as ``train``). ``resume`` ("latest" or a checkpoint) continues a run
    bit-identically on the same device; ``stop_at`` ends early after that step with a checkpoint; ``on_event``
    gets a 'distill' Progress event per step, ``cancel`` stops after the step in progress (events.py)."""
    check_distill_config(config)
    run_dir = Path(run_dir)
    check_run_dir(run_dir, resume)  # --out first, before the teacher is looked at
    refuse_untrainable(config.teacher)
    ckpt_io.resolve_checkpoint(config.teacher)  # a teacher that is not there: one line, before the folder is made
    if config.threads:
        torch.set_num_threads(config.threads)
    with run_lock(run_dir, resume):  # the exclusive lock, then the folder checked again (rundir.py)
        source = find_resume(run_dir, resume) if resume else None
        if source is not None:
            config = _recorded_config(source, config)
        config = replace(config, warmup_steps=warmup(config))  # resolved, so config.json records it
        return _distill(config, run_dir, source, stop_at, on_event, cancel)


def _distill(config: DistillConfig, run_dir: Path, source: Path | None, stop_at: int | None,
             on_event: Observer | None, cancel: CancelToken | None) -> DistillResult:
    device = pick_device(config.device)
    teacher, teacher_ckpt, sha = load_teacher(config.teacher, device)
    guidance = teacher_guidance(teacher, config)
    sigmas = student_grid(teacher, teacher_ckpt, config.steps, config.spacing)
    record = student_record(teacher, teacher_ckpt, sha, config, sigmas, guidance)
    shape = tuple(teacher.sample_shape)
    limits.check_memory("the teacher trajectories of one chunk",
                        limits.images_bytes(config.chunk * (config.steps + 1), shape))
    conditioner = teacher.conditioner
    # prompts: a class model's class names, a text model's training vocabulary (its config's class_names)
    vocab = list(teacher.config.class_names or teacher.trained_prompts()) if conditioner.takes_prompts else []
    if conditioner.takes_prompts and not vocab:
        raise UsageError(f"--model {config.teacher}: a conditional teacher without a prompt vocabulary (class "
                         f"names) cannot be distilled here")
    cond_table = conditioner.encode(vocab).to(device) if vocab else None
    guided = teacher.guided(guidance) if cond_table is not None else teacher.denoiser  # Ho & Salimans 2022, Eq. 6

    student = copy.deepcopy(teacher.denoiser).requires_grad_(True).train()  # initialised from the teacher
    ema_net = copy.deepcopy(student.net).requires_grad_(False)
    params = list(student.net.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr, betas=(0.9, 0.99), weight_decay=0.0)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup(config))))
    start, elapsed_before = 0, 0.0
    ckpt_dir = run_dir / "checkpoints"
    ckpt_io.clean_stale_temp(ckpt_dir)
    if source is not None:
        state = restore(source, student.net, ema_net, opt, lr_sched)
        start, elapsed_before = int(state["step"]), float(state.get("elapsed_s", 0.0))
        recorded = _run_record(source).get("student") or {}
        if (recorded.get("teacher") or {}).get("sha256") != sha:
            raise UsageError(f"--resume: the teacher {config.teacher} is not the one this run was distilled from "
                             f"(its weights' sha256 differs from the recorded one)")
    run_config = {"data": teacher.run_config.get("data"), "model": config_io.to_dict(teacher.config),
                  "distill": config_io.to_dict(config), "student": record}
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_io.write_json_atomic(run_dir / "config.json", run_config)
    log = MetricsLog(run_dir / "metrics.csv", start, METRICS_FIELDS)
    beside = tuple(x for x in (teacher.codec, TunedGridsFile(tuned_document(sigmas, record))) if x is not None)

    sig = torch.tensor(sigmas, dtype=torch.float64, device=device)
    end = min(config.max_steps, stop_at or config.max_steps)
    chunk_index, states, conds = -1, None, None
    t0 = window_t = time.perf_counter()
    teacher_s, window_n, rate, loss_value, last_ckpt = 0.0, 0, 0.0, math.nan, None
    for step in range(start, end):
        if step // config.chunk_steps != chunk_index:  # solve the next chunk of teacher trajectories
            chunk_index = step // config.chunk_steps
            report(on_event, cancel, Progress("distill", step, end, f"teacher trajectories, chunk {chunk_index}"))
            t_teacher = time.perf_counter()
            states, conds = _teacher_chunk(guided, cond_table, sig, shape, config, chunk_index, device)
            teacher_s += time.perf_counter() - t_teacher
        g = step_generator(config.seed, step)
        rows = torch.randint(config.chunk, (config.batch_size,), generator=g).to(device)
        i = torch.randint(config.steps, (config.batch_size,), generator=g).to(device)
        x, x_next = states[i, rows], states[i + 1, rows]
        target = euler_target(x, x_next, sig[i], sig[i + 1])
        loss = distill_loss(student, x, sig[i], target, None if conds is None else conds[rows]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip or float("inf"))
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            raise TrainingError(f"non-finite loss or gradient at step {step + 1}: distillation stopped; the last "
                                f"good checkpoint is kept (try a lower --lr)")
        opt.step()
        lr_sched.step()
        ema_update(ema_net, student.net, ema_decay_at(step, config.ema_decay))
        done, loss_value = step + 1, loss.item()
        window_n += config.batch_size
        if done % max(1, config.log_every) == 0 or done == end:
            now = time.perf_counter()
            rate = window_n / max(now - window_t, 1e-9)
            window_t, window_n = now, 0
            log.write({"step": done, "loss": f"{loss_value:.6f}", "lr": f"{opt.param_groups[0]['lr']:.6g}",
                       "grad_norm": f"{float(grad_norm):.4f}", "pairs_per_s": f"{rate:.1f}",
                       "elapsed_s": f"{elapsed_before + now - t0:.1f}"})
        report(on_event, cancel, Progress("distill", done, end, f"loss {loss_value:.4f}", {"loss": loss_value}))
        if (config.checkpoint_every and done % config.checkpoint_every == 0) or done == end:
            state = {"optimizer": opt.state_dict(), "lr_schedule": lr_sched.state_dict(), "step": done,
                     "rng_cpu": torch.get_rng_state(), "elapsed_s": elapsed_before + time.perf_counter() - t0}
            last_ckpt = ckpt_io.save_or_stop(ckpt_dir, done, TrainingError, model=student.net, ema=ema_net,
                                             model_config=teacher.config, run_config=run_config, state=state,
                                             beside=beside)
            prune_checkpoints(ckpt_dir, config.keep_checkpoints)
    if last_ckpt is None:  # resumed at (or past) the end: nothing left to do
        last_ckpt = ckpt_io.list_checkpoints(ckpt_dir)[-1]
    return DistillResult(run_dir, end, loss_value, last_ckpt, rate, time.perf_counter() - t0, teacher_s)


def _run_record(ckpt: Path) -> dict[str, Any]:
    from diffuscope.models.load import load_config

    return load_config(ckpt)[1]


def _teacher_chunk(guided, cond_table, sig: Tensor, shape, config: DistillConfig, chunk_index: int, device):
    """(states [K + 1, chunk, ...], conditions [chunk] or None) of chunk ``chunk_index``: noises and prompts drawn
    from ``chunk_generator``, solved by the (guided) teacher in batches of TEACHER_BATCH."""
    g = chunk_generator(config.seed, chunk_index)
    noise = torch.randn((config.chunk, *shape), generator=g)
    labels = torch.randint(len(cond_table), (config.chunk,), generator=g) if cond_table is not None else None
    conds = cond_table[labels.to(device)] if labels is not None else None
    sigmas = sig.cpu()
    parts = []
    for a in range(0, config.chunk, TEACHER_BATCH):
        b = min(a + TEACHER_BATCH, config.chunk)
        x = noise[a:b].to(device) * float(sigmas[0])
        parts.append(teacher_trajectory(guided, x, sigmas, None if conds is None else conds[a:b],
                                        config.substeps))
    return torch.cat(parts, dim=1), conds

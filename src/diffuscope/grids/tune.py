"""Tuning a model's sigma grids, end to end: calibration noise and prompts, the teacher, the search per step count
(tuning.py: dynamic programming as OSS, Pei et al. 2025; GITS, Chen et al. 2024), its refinement and learning
(LD3, Tong et al. 2025), the evaluation against the model's default grid on other seeds, and installing the
winners with the model. `diffuscope tune-steps` maps its flags onto ``TuneConfig`` and calls ``tune_grids``.

    result = tune_grids(model, TuneConfig(steps=(5, 8, 10), sampler="iPNDM"))
    install_grids(model, result)          # the grids the evaluation finds better, into the model's folder
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffuscope.checks.errors import UsageError
from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER
from diffuscope.core.guidance import check_interval
from diffuscope.core.model import DiffusionModel
from diffuscope.core.schedules import make_grid
from diffuscope.grids import store, tuning
from diffuscope.samplers import get_sampler, make_generators, randn

CALIBRATION_SEED = 1_000_000  # far from the seeds users and the sweep start at (0): calibration and evaluation differ


@dataclass(frozen=True)
class TuneConfig:
    """What `diffuscope tune-steps` tunes (its flags, one to one)."""

    steps: tuple[int, ...] = (5, 8, 10, 12, 15)  # step counts to tune
    sampler: str = DEFAULT_SAMPLER  # the sampler to tune
    prompts: tuple[str, ...] = ("all",)  # round-robin over calibration images; "all": every class / trained name
    seeds: int = 32  # calibration images
    seed: int = CALIBRATION_SEED  # calibration image i uses seed + i
    eval_seeds: int = 64  # evaluation images, disjoint from the calibration ones (0 = no evaluation)
    eval_seed: int = 0  # evaluation image i uses eval_seed + i (as `sample` and `sweep`)
    teacher: str = DEFAULT_SAMPLER  # deterministic teacher
    fine_steps: int = 100  # the teacher's steps on the model's default grid: the candidate sigmas
    reference_steps: int = 200  # steps of the evaluation reference (the teacher on the default grid)
    refine_rounds: int = 1  # rounds of coordinate descent on the final error after the search
    learn_iterations: int = 0  # Adam iterations per step count on the step times (LD3; 0 = none)
    learn_rate: float = 0.02  # Adam's learning rate on the step times' log-sigma shares
    learn_batch: int = 32  # calibration images per learning iteration
    guidance: float = DEFAULT_GUIDANCE  # classifier-free guidance during tuning and evaluation (1 = off)
    guidance_interval: tuple[float, float] | None = None  # guided only where lo < sigma <= hi
    batch_size: int = 256  # images per network call
    compare_installed: bool = False  # also evaluate the grids already installed for this sampler (--replace)


@dataclass
class TuneResult:
    """The tuned grids, as the tuned_grids.json document ``doc`` (one tuning ``record``), and their evaluation."""

    doc: dict[str, Any]  # store.empty() with this sampler's grids and record
    record: dict[str, Any]  # how they were found (also doc["tuning"][sampler id][0])
    grids: dict[int, tuning.TunedGrid]  # steps -> grid (sigmas rounded as stored)
    rows: list[dict[str, Any]]  # per step count: RMSE of the default, tuned (and installed) grids, change
    sampler: str  # display name
    sampler_id: str


def check_tune(config: TuneConfig) -> None:
    """Refuse a config in one line before anything loads."""
    tuning.stepper(get_sampler(config.sampler).name)
    if config.learn_iterations:
        tuning.differentiable_stepper(get_sampler(config.sampler).name)
    cal = range(config.seed, config.seed + config.seeds)
    ev = range(config.eval_seed, config.eval_seed + config.eval_seeds)
    if config.eval_seeds and max(cal.start, ev.start) < min(cal.stop, ev.stop):
        raise UsageError(f"calibration seeds {cal.start}..{cal.stop - 1} and evaluation seeds {ev.start}.."
                         f"{ev.stop - 1} overlap: they must be disjoint")
    if max(config.steps) > config.fine_steps:
        raise UsageError(f"--fine-steps {config.fine_steps} must be >= the largest step count {max(config.steps)}")


def calibration_prompts(model: DiffusionModel, prompts: tuple[str, ...]) -> tuple[str, ...] | None:
    """The prompts the calibration images cycle through: "all" = every class (or trained name of a text model); a
    class model's comma lists split; None for an unconditional model (which refuses a prompt)."""
    conditioner = model.conditioner
    if not conditioner.takes_prompts:
        if prompts != ("all",):
            conditioner.check(prompts[0])  # refuses a prompt in one line
        return None
    if conditioner.has_classes:
        prompts = tuple(part.strip() for p in prompts for part in str(p).split(",") if part.strip())
    if any(p.strip().lower() == "all" for p in prompts):
        if len(prompts) > 1:
            raise UsageError("prompt 'all' already means every class: give it alone")
        names = tuple(model.trained_prompts())
        if not names:
            raise UsageError(f"give --prompt ({conditioner.describe()}): this model has no trained names for 'all'")
        return names
    names = tuple(conditioner.check(p) for p in prompts)
    if conditioner.has_classes and len(set(names)) != len(names):
        raise UsageError(f"a class is prompted twice in {list(prompts)}")
    return names


def tune_grids(model: DiffusionModel, config: TuneConfig, *, device: str | torch.device = "cpu",
               log: Callable[[str], None] = print) -> TuneResult:
    """Tune ``config.sampler``'s grid per step count for ``model`` (module notes); ``log`` receives progress lines.
    A latent model is tuned on its latents (the state the sampler integrates) and evaluated on decoded images."""
    check_tune(config)
    spec, teacher = get_sampler(config.sampler), get_sampler(config.teacher)
    c = config
    interval = check_interval(c.guidance_interval) if c.guidance != 1 else None
    denoiser = model.guided(c.guidance, interval)
    prompts = calibration_prompts(model, c.prompts)

    def batch(start: int, count: int) -> tuple[Tensor, Any]:
        noise = randn((count, *model.sample_shape), make_generators(start, count)).to(device)
        cond = model.conditioner.conditions(prompts, count)
        return noise, None if cond is None else cond.to(device)

    fine = make_grid(model.schedule, c.fine_steps)
    noise, cond = batch(c.seed, c.seeds)
    t0 = time.perf_counter()
    states = tuning.teacher_states(denoiser, noise, fine.sigmas, cond=cond, teacher=teacher.name,
                                   batch_size=c.batch_size)
    calibration = tuning.Calibration(noise, states, cond)
    t_teacher = time.perf_counter() - t0
    found = tuning.search_grids(denoiser, calibration, fine.sigmas, c.steps, sampler=spec.name,
                                batch_size=c.batch_size,
                                progress=lambda k, n: log(f"level {k}/{n}, {time.perf_counter() - t0:.0f} s"))
    if c.refine_rounds:
        found = {k: tuning.refine_grid(denoiser, calibration, fine.sigmas, g, sampler=spec.name,
                                       rounds=c.refine_rounds) for k, g in found.items()}
    if c.learn_iterations:
        found = _learned(model, denoiser, calibration, found, float(fine.sigmas[-2]), c,
                         lambda line: log(f"{line} ({time.perf_counter() - t0:.0f} s)"))
    # stored (and evaluated) as a PNG records them: rounded to 6 decimals (store.py)
    found = {k: tuning.TunedGrid(k, store.round_sigmas(g.sigmas), g.calibration_mse) for k, g in found.items()}
    t_search = time.perf_counter() - t0 - t_teacher
    rows, evaluation = [], None
    if c.eval_seeds:
        t1 = time.perf_counter()
        e_noise, e_cond = batch(c.eval_seed, c.eval_seeds)
        rows = _evaluate(model, denoiser, e_noise, e_cond, found, c)
        evaluation = {"seeds": [c.eval_seed, c.eval_seed + c.eval_seeds - 1],
                      "reference": f"{teacher.name} {c.reference_steps} steps",
                      "rmse_unit": "grey levels (mean over images of the per-image RMSE, x 127.5)", "rows": rows,
                      "wall_s": round(time.perf_counter() - t1, 1)}
    record = {"sampler": spec.name, "teacher": f"{teacher.name} {c.fine_steps} steps ({fine.spacing})",
              "refine_rounds": c.refine_rounds, "learn_iterations": c.learn_iterations,
              **({"learn_rate": c.learn_rate, "learn_batch": c.learn_batch} if c.learn_iterations else {}),
              "guidance": c.guidance, "guidance_interval": None if interval is None else list(interval),
              "prompts": list(c.prompts), "calibration_seeds": [c.seed, c.seed + c.seeds - 1],
              "calibration_mse": {str(k): g.calibration_mse for k, g in sorted(found.items())},
              "wall_s": {"teacher": round(t_teacher, 1), "search": round(t_search, 1)},
              "threads": torch.get_num_threads(), "device": str(device), "evaluation": evaluation,
              "model": str(model.path or model.name), "model_step": model.step}
    doc = store.empty()
    doc["grids"][spec.id] = {str(k): g.sigmas for k, g in sorted(found.items())}
    doc["tuning"][spec.id] = [record]
    store.check_tuned(doc)
    return TuneResult(doc, record, found, rows, spec.name, spec.id)


def _learned(model: DiffusionModel, denoiser, calibration: tuning.Calibration, found: dict, sigma_min: float,
             c: TuneConfig, log: Callable[[str], None]) -> dict[int, tuning.TunedGrid]:
    """The searched grids with their step times learned by gradient descent (LD3); a grid learning does not lower
    is kept."""
    if isinstance(model.denoiser, torch.nn.Module):
        model.denoiser.requires_grad_(False)  # gradients reach the step times only, not the weights

    def report(k: int, it: int, loss: float) -> None:
        if it % 10 == 0 or it == c.learn_iterations:
            log(f"{k} steps: learning {it}/{c.learn_iterations}, batch MSE {loss:.3g}")

    learned = {}
    for k, g in sorted(found.items()):
        learned[k] = tuning.learn_grid(
            denoiser, calibration, g, sampler=get_sampler(c.sampler).name, sigma_min=sigma_min,
            learning=tuning.Learning(c.learn_iterations, c.learn_rate, c.learn_batch),
            progress=lambda it, loss, k=k: report(k, it, loss))
        kept = "learned" if learned[k] is not g else "kept the search's grid (learning did not lower it)"
        log(f"{k} steps: calibration MSE {g.calibration_mse:.3g} -> {learned[k].calibration_mse:.3g}, {kept}")
    return learned


def _evaluate(model: DiffusionModel, denoiser, noise: Tensor, cond, found: dict, c: TuneConfig) -> list[dict]:
    """Per step count: RMSE (grey levels) to the teacher's reference of the default grid, the tuned one and, with
    ``compare_installed``, the one installed; errors are measured on decoded images."""
    spec, teacher = get_sampler(c.sampler), get_sampler(c.teacher)

    def decode(samples: Tensor) -> Tensor:  # the identity for a pixel model
        with torch.inference_mode():
            return torch.cat([model.decode(b.to(noise.device)).cpu() for b in samples.split(c.batch_size)])

    ref = decode(tuning.solve(denoiser, noise, make_grid(model.schedule, c.reference_steps).sigmas,
                              sampler=teacher.name, cond=cond, batch_size=c.batch_size))
    installed = store.tuned_table(model.path, spec.name) if c.compare_installed else {}
    rows = []
    for k, g in sorted(found.items()):
        default = make_grid(model.schedule, k)
        candidates = [(default.spacing, default.sigmas), ("tuned", torch.tensor(g.sigmas))]
        if k in installed:
            candidates.append(("installed", torch.tensor(installed[k])))
        errs = {}
        for name, sigmas in candidates:
            images = tuning.solve(denoiser, noise, sigmas.to(torch.float64), sampler=spec.name, cond=cond,
                                  batch_size=c.batch_size)
            errs[name] = float(tuning.rmse_per_image(decode(images), ref).mean()) * 127.5
        rows.append({"steps": k, f"rmse_{default.spacing}": errs[default.spacing], "rmse_tuned": errs["tuned"],
                     "change": errs["tuned"] / errs[default.spacing] - 1,
                     **({"rmse_installed": errs["installed"]} if "installed" in errs else {})})
    return rows


def install_grids(model: DiffusionModel, result: TuneResult, *, replace: bool = False,
                  log: Callable[[str], None] = print) -> list[str]:
    """Add the tuned grids the evaluation finds better than the default grid (with ``replace``: and than the grid
    installed) to the model folder's tuned_grids.json, recorded in its manifest; returns the step counts
    installed (none: the file is unchanged)."""
    from diffuscope.io.checkpoint import record_in_manifest, write_json_atomic

    target = Path(model.path) / store.TUNED_FILE
    worse = [r["steps"] for r in result.rows if r["change"] >= 0]  # the evaluation says the default is better
    for k in worse:
        row = next(r for r in result.rows if r["steps"] == k)
        log(f"not installed: {k} steps (the tuned grid is {row['change']:+.0%} against the default grid on the "
            f"evaluation seeds)")
    for row in result.rows:  # replace: the installed grid stays unless the new one beats it too
        if "rmse_installed" in row and row["steps"] not in worse and row["rmse_tuned"] >= row["rmse_installed"]:
            worse.append(row["steps"])
            log(f"not installed: {row['steps']} steps (the installed grid is as good or better: "
                f"{row['rmse_installed']:.2f} against {row['rmse_tuned']:.2f} grey levels)")
    kept = {s: g for s, g in result.doc["grids"][result.sampler_id].items() if int(s) not in worse}
    if not kept:
        log(f"nothing installed: {target} is unchanged")
        return []
    install = {**result.doc, "grids": {result.sampler_id: kept}}
    merged = store.merge_tuned(store.load_tuned(model.path), install, replace=kept if replace else ())
    write_json_atomic(target, merged)
    record_in_manifest(model.path, store.TUNED_FILE)  # else the checkpoint no longer verifies
    log(f"installed: {', '.join(sorted(kept, key=int))} steps in {target}")
    return sorted(kept, key=int)

"""The step sweep: every (sampler, step count) cell from the same prompts and the same initial noise, measured.

    result = sweep("runs/mnist", SweepConfig(steps=(10, 25, 50, 100), samplers=("DDIM", "DPM++ 2M"), prompts=("7",)))
    result.cells, result.floor, result.knees["DDIM"]["fd"].edm_nfe, result.to_dict()

Order of work: the real-vs-real floor, the convergence reference (``reference_steps`` of a deterministic sampler,
Heun by default, same grid spacing, guidance, prompts and noise), then the cells, sampler by sampler (so an
interrupted run still holds whole curves). Ctrl-C (KeyboardInterrupt) or a cancelled token stops after the finished
cells: the result comes back with ``interrupted=True`` and is a valid partial result (knees over the cells that
exist).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffuscope.checks.errors import UsageError
from diffuscope.core.conditioning import as_cond
from diffuscope.core.events import Cancelled, CancelToken, Observer, ProgressDenoiser
from diffuscope.io.jsonsafe import json_safe
from diffuscope.sweep.config import (
    CLASSIFIER_GROUPS,
    DISTRIBUTION_GROUPS,
    METRIC_GROUPS,
    METRICS,
    SweepConfig,
    check_config,
    reference_steps,
)
from diffuscope.sweep.inputs import SweepInputs, model_inputs
from diffuscope.sweep.knee import Knee, find_knee, gap_nfe, with_gap, with_spread, worst_nfe
from diffuscope.sweep.measure import Meter


@dataclass
class Cell:
    """One (sampler, steps) run of all n images and its numbers."""

    sampler: str  # display name
    sampler_id: str
    deterministic: bool
    steps: int
    nfe: int  # measured network evaluations per image (CountingDenoiser, per batch)
    nfe_expected: int  # the sampler's NFE formula
    wall_s: float  # generation wall time, all batches
    metrics_s: float  # time spent measuring
    grid: dict  # SigmaGrid.describe(): spacing, sigmas (and timesteps)
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)
    images: Tensor | None = field(default=None, repr=False)  # the first grid_rows images (for grid.png)
    samples: dict = field(default_factory=dict, repr=False)  # per-image arrays (Measured.samples), not saved

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("images", "samples")}
        return json_safe(d)


@dataclass
class SweepResult:
    config: SweepConfig
    seed: int  # the seed used (resolved when -1)
    labels: list[int] | None  # the class of image i, the same in every cell
    groups: tuple[str, ...]  # metric groups measured
    cells: list[Cell]
    floor: dict[str, Any] | None  # real-vs-real at the same N: comparison, n, n_reference, metrics, intervals
    reference: dict[str, Any]  # the convergence reference: sampler, steps, nfe, wall_s, grid
    knees: dict[str, dict[str, Knee]]  # sampler -> metric key -> Knee
    notes: list[str]
    info: dict[str, Any]  # model, prompts, classifier, data
    interrupted: bool = False
    wall_s: float = 0.0
    reference_images: Tensor | None = field(default=None, repr=False)  # the first grid_rows reference images

    @property
    def samplers(self) -> list[str]:
        return list(dict.fromkeys(c.sampler for c in self.cells))

    @property
    def metric_keys(self) -> list[str]:
        present = {k for c in self.cells for k in c.metrics}
        return [m.key for m in METRICS if m.key in present]

    @property
    def unresolved_metrics(self) -> list[str]:
        """Metrics that separate no two cells of any sampler beyond sampling noise at this n (Knee.separated is
        False for every sampler): the reports fold them away with a note instead of plotting flat lines."""
        def unresolved(key: str) -> bool:
            knees = [per[key] for per in self.knees.values() if key in per]
            return bool(knees) and all(k.separated is False for k in knees)

        return [key for key in self.metric_keys if unresolved(key)]

    def cell(self, sampler: str, steps: int) -> Cell | None:
        """The cell of a sampler (any of its names) or of a row label such as "iPNDM (tuned)"."""
        from diffuscope.samplers import get_sampler

        name = sampler if any(c.sampler == sampler for c in self.cells) else get_sampler(sampler).name
        return next((c for c in self.cells if c.sampler == name and c.steps == steps), None)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "format": 1, "config": asdict(self.config), "seed": self.seed, "labels": self.labels,
            "metric_groups": list(self.groups), "interrupted": self.interrupted, "wall_s": self.wall_s,
            "info": self.info, "reference": self.reference, "floor": self.floor, "notes": self.notes,
            "cells": [c.to_dict() for c in self.cells],
            "knees": {s: {k: kn.to_dict() for k, kn in per.items()} for s, per in self.knees.items()},
        })


def compute_knees(cells: list[Cell], threshold: float, meter: Meter | None = None) -> dict[str, dict[str, Knee]]:
    """Per sampler and metric: the EDM point, the Kneedle point and plateau detection over NFE; with ``meter``,
    whether the EDM point is resolved (the paired gap of the cell below it to the best cell) and whether the
    curve separates its worst cell from its best at all (knee.py)."""
    out: dict[str, dict[str, Knee]] = {}
    for sampler in dict.fromkeys(c.sampler for c in cells):
        mine = sorted((c for c in cells if c.sampler == sampler), key=lambda c: c.nfe)
        out[sampler] = {}
        for m in METRICS:
            pts = [(c.nfe, c.metrics[m.key]) for c in mine if m.key in c.metrics]
            if pts:
                caveat = ("stochastic sampler: it does not converge to the deterministic reference"
                          if m.group == "convergence" and not mine[0].deterministic else "")
                knee = find_knee([p[0] for p in pts], [p[1] for p in pts], metric=m.key,
                                 higher_is_better=m.higher_is_better, threshold=threshold,
                                 tolerance=None if caveat else m.tolerance, caveat=caveat)
                by_nfe = {c.nfe: c for c in mine if m.key in c.metrics}
                below, best = by_nfe.get(gap_nfe(knee)), by_nfe.get(knee.best_nfe)
                gap = meter.paired_gap(m.key, below.samples, best.samples) if meter and below and best else None
                knee = with_gap(knee, gap)
                worst = by_nfe.get(worst_nfe(knee))
                spread = meter.paired_gap(m.key, worst.samples, best.samples) if meter and worst and best else None
                own = (worst.intervals.get(m.key), best.intervals.get(m.key)) if worst and best else (None, None)
                out[sampler][m.key] = with_spread(knee, spread, own if None not in own else None)
    return out


def _notes(config: SweepConfig, specs, grids, ref_steps: int, groups, inputs: SweepInputs, f_dim: int | None):
    notes = []
    for s in specs:
        if not s.deterministic:
            notes.append(f"{s.name} is stochastic: it injects fresh noise at every step, so its images change with "
                         f"the step count for reasons unrelated to quality, and its convergence RMSE to the "
                         f"deterministic reference does not go to 0. Compare it by distribution metrics only.")
    if ref_steps <= max(config.steps):
        notes.append(f"the convergence reference ({ref_steps} steps) is not finer than the largest step count "
                     f"tested ({max(config.steps)}): convergence numbers near it are not meaningful")
    starts = {round(float(g.sigmas[0]), 6) for g in grids.values()}
    if len(starts) > 1:
        notes.append(f"the grids start at different sigmas ({min(starts):.4g}..{max(starts):.4g}; e.g. 'leading' "
                     f"spacing never starts at pure noise): cells differ in more than the step count")
    if any(g in DISTRIBUTION_GROUPS for g in groups):
        notes.append("FD (and KID, precision/recall) are biased at small N: read them against the real-vs-real "
                     "floor at the same N, not as absolute numbers")
        if f_dim and config.n < f_dim:
            notes.append(f"n={config.n} is below the feature dimension ({f_dim}): FD's covariance is singular and "
                         f"its bias large; use a larger --n for FD")
    not_measured = inputs.info.get("not_measured") or []
    notes.extend(f"not measured: {what}" for what in not_measured)
    if inputs.info.get("no_judge"):
        notes.append(inputs.info["no_judge"])
    elif inputs.info.get("classifier", "") is None and not not_measured:
        notes.append("no classifier for this model: only convergence was measured. Train one with "
                     "`diffuscope classifier --data DATA --out RUN_DIR/classifier` for FD, KID, precision/recall "
                     "and accuracy")
    return notes


def sweep(model, config: SweepConfig | None = None, *, schedule=None, shape: tuple[int, int, int] | None = None,
          labels: Tensor | None = None, null_label: int | None = None, features: Callable | None = None,
          classify: Callable | None = None, reference_images: Tensor | None = None,
          floor_images: Tensor | None = None, floor_labels: Tensor | None = None, num_classes: int | None = None,
          device: str | torch.device = "cpu", on_cell: Callable[[Cell], None] | None = None,
          on_event: Observer | None = None, cancel: CancelToken | None = None) -> SweepResult:
    """Run the sweep (see the module notes).

    model             a checkpoint/run folder, built-in model name or DiffusionModel (then the schedule, shape,
                      prompts (config.prompts), decoder, evaluator and real images come from it), or any denoiser
                      D(x, sigma, cond) with ``schedule`` and ``shape`` given.
    labels            int64 [n] class per image (default for a model: config.prompts round-robin; for a
                      denoiser: unconditional, i.e. cond = null_label, or 0 without one, for every image)
    features/classify images -> features [N, D] / predicted classes [N]: turn on FD, KID, precision/recall
                      (with reference_images) and accuracy (with labels)
    floor_images      n real images disjoint from reference_images (with floor_labels): the real-vs-real floor
    on_cell           called after each finished cell (a KeyboardInterrupt raised there stops the sweep cleanly)
    on_event, cancel  Progress events (task "sweep", one per network call) and a CancelToken (events.py);
                      cancelling stops the sweep as Ctrl-C does, with a valid partial result
    """
    from diffuscope.core.model import DiffusionModel
    from diffuscope.core.schedules import make_grid
    from diffuscope.generation.generate import generate
    from diffuscope.grids.store import reference_spacing, sweep_rows
    from diffuscope.samplers import get_sampler, resolve_seed

    config = config or SweepConfig()
    check_config(config)
    t0 = time.perf_counter()
    if not isinstance(model, str | Path | DiffusionModel):
        if schedule is None or shape is None:
            raise UsageError("a bare denoiser needs schedule= and shape=")
        inputs = SweepInputs(model, schedule, tuple(shape), labels, null_label, (), features, classify,
                             reference_images, floor_images, floor_labels)
        groups = config.metrics or _available(inputs)
    else:
        inputs, groups = model_inputs(model, config, device=device, labels=labels)
    _check_inputs(config, inputs, groups)
    seed = resolve_seed(config.seed)
    specs = [get_sampler(s) for s in config.samplers]
    ref_spec = get_sampler(config.reference_sampler)
    T = inputs.schedule.num_timesteps if inputs.schedule.is_discrete else None
    if T is not None and max(config.steps) > T:
        raise UsageError(f"steps {max(config.steps)} > T={T}: this discrete-time model has only {T} timesteps")
    ref_steps = reference_steps(config, T)
    # one row per sampler and spacing (`--spacing karras,tuned` side by side; tuned grids from the model folder)
    rows, grid_notes = sweep_rows(inputs.info.get("model_path"), inputs.schedule, config.samplers, config.steps,
                                  config.spacing)
    grids = {(label, k): g for label, _, per in rows for k, g in per.items()}
    ref_grid = make_grid(inputs.schedule, ref_steps, reference_spacing(config.spacing))

    n, labels_t = config.n, inputs.labels
    if labels_t is not None and len(labels_t) != n:
        raise UsageError(f"{len(labels_t)} labels for n={n} images")
    gen_cond = inputs.cond if inputs.cond is not None else labels_t
    if gen_cond is None and inputs.null_label is not None:
        gen_cond = as_cond(inputs.null_label).expand(n)  # unconditional sampling of a conditional model
    common_n = {"n": n, "decode": inputs.decode}
    ci = config.ci_resamples if n <= config.ci_max_n else 0
    meter = Meter(groups, features=inputs.features, classify=inputs.classify,
                  reference_images=inputs.reference_images, ci_resamples=ci, seed=seed,
                  num_classes=num_classes or (len(inputs.class_names) or None))
    f_dim = None if meter.ref_f is None else meter.ref_f.shape[1]
    notes = _notes(config, specs, grids, ref_steps, groups, inputs, f_dim) + grid_notes

    batches = math.ceil(n / config.batch_size)
    total = batches * (ref_spec.nfe(ref_steps) + sum(s.nfe(k) for _, s, per in rows for k in per))
    denoiser = ProgressDenoiser(inputs.denoiser, "sweep", total, on_event, cancel)
    common = {"guidance": config.guidance, "guidance_interval": config.guidance_interval, "seed": seed,
              "null_label": inputs.null_label, "batch_size": config.batch_size, "device": device, **common_n}
    if inputs.cond is None and labels_t is None and config.guidance != 1:
        common["guidance"], common["guidance_interval"] = 1.0, None  # unconditional: nothing to guide
    floor = None
    cells: list[Cell] = []
    reference: dict[str, Any] = {"sampler": ref_spec.name, "steps": ref_steps, "grid": ref_grid.describe()}
    ref_images = None
    interrupted = False
    try:
        if inputs.floor_images is not None and meter.ref_f is not None:
            m = meter.measure(inputs.floor_images, inputs.floor_labels, convergence=False)
            floor = {"comparison": inputs.floor_comparison, "n": len(inputs.floor_images),
                     "n_reference": meter.n_reference, "metrics": m.values, "intervals": m.intervals,
                     "extra": m.extra}
        denoiser.stage = f"reference {ref_spec.name} {ref_steps} steps"
        start = time.perf_counter()
        ref = generate(denoiser, inputs.schedule, gen_cond, inputs.shape, sampler=ref_spec.name,
                       grid=ref_grid, **common)
        reference.update(nfe=ref.nfe, wall_s=time.perf_counter() - start)
        meter.set_convergence_reference(ref.images)
        ref_images = ref.images[: config.grid_rows]
        for label, spec, per in rows:
            for steps in per:
                denoiser.stage = f"{label} {steps} steps"
                run = partial(generate, denoiser, inputs.schedule, gen_cond, inputs.shape, sampler=spec.name,
                              grid=per[steps], **common)
                cells.append(_cell(spec, steps, run, meter, labels_t, config.grid_rows, label))
                if on_cell is not None:
                    on_cell(cells[-1])
    except (KeyboardInterrupt, Cancelled):
        interrupted = True
        notes.append(f"interrupted: {len(cells)} of {sum(len(per) for _, _, per in rows)} cells finished")
    info = {**inputs.info, "shape": list(inputs.shape), "guidance_used": common["guidance"],
            "guidance_interval_used": (None if common["guidance"] == 1 or common["guidance_interval"] is None
                                       else list(common["guidance_interval"]))}
    return SweepResult(config, seed, None if labels_t is None else labels_t.tolist(), groups, cells, floor,
                       reference, compute_knees(cells, config.threshold, meter), notes, info, interrupted,
                       time.perf_counter() - t0, ref_images)


def _cell(spec, steps: int, run: Callable, meter: Meter, labels: Tensor | None, grid_rows: int,
          label: str | None = None) -> Cell:
    """Generate one cell (``run()`` -> Generation), time it and measure it; ``label`` names its row (default the
    sampler's name)."""
    start = time.perf_counter()
    gen = run()
    wall = time.perf_counter() - start
    start = time.perf_counter()
    m = meter.measure(gen.images, labels)
    return Cell(label or spec.name, spec.id, spec.deterministic, steps, gen.nfe, spec.nfe(steps), wall,
                time.perf_counter() - start, gen.grid.describe(), m.values, m.intervals, m.extra,
                gen.images[:grid_rows].clone(), m.samples)


def _available(inputs: SweepInputs) -> tuple[str, ...]:
    """The default metric groups for a bare denoiser: whatever its inputs allow (convergence always)."""
    has_real = inputs.features is not None and inputs.reference_images is not None
    can_classify = inputs.classify is not None and inputs.labels is not None
    return tuple(g for g in METRIC_GROUPS if g == "convergence" or (g == "accuracy" and can_classify)
                 or (g in DISTRIBUTION_GROUPS and has_real))


def _check_inputs(config: SweepConfig, inputs: SweepInputs, groups: tuple[str, ...]) -> None:
    if any(g in CLASSIFIER_GROUPS for g in groups):
        need = [g for g in groups if g in DISTRIBUTION_GROUPS]
        if need and (inputs.features is None or inputs.reference_images is None):
            raise UsageError(f"metrics {', '.join(need)} need features= and reference_images= (a classifier and "
                             f"real images; train a classifier with `diffuscope classifier --data DATA "
                             f"--out RUN_DIR/classifier`)")
        if "accuracy" in groups and (inputs.classify is None or inputs.labels is None):
            raise UsageError("metric accuracy needs classify= and labels= (a classifier and prompts)")
    check_config(replace(config, metrics=groups))  # n against the metrics actually measured

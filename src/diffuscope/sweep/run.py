"""The step sweep: every (sampler, step count) cell from the same prompts and the same initial noise, measured.

    result = sweep("runs/mnist", SweepConfig(steps=(10, 25, 50, 100), samplers=("DDIM", "DPM++ 2M"), prompts=("7",)))
    result.cells, result.floor, result.knees["DDIM"]["fd"].edm_nfe, result.to_dict()

Order of work: the real-vs-real floor, the convergence reference (``reference_steps`` of a deterministic sampler,
Heun by default, same grid spacing, guidance, prompts and noise), then the cells, sampler by sampler (so an
interrupted run still holds whole curves). Ctrl-C (KeyboardInterrupt) or a cancelled token stops after the finished
cells: the result comes back with ``interrupted=True`` and is a valid partial result (knees over the cells that
exist).

``sweep_models`` puts several models in one result (series.py): the same loop over every model's rows, after the
first model's reference.
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
from diffuscope.core.events import Cancelled, CancelToken, Observer, ProgressDenoiser
from diffuscope.generation.generate import GenerationRequest, generate
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
from diffuscope.sweep.inputs import SweepInputs, generation_inputs, model_inputs
from diffuscope.sweep.knee import Knee, find_knee, settle, with_spread, worst_nfe
from diffuscope.sweep.measure import Meter
from diffuscope.sweep.series import SweepModel, check_compatible, check_models, model_record, row_label


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
    # the reference run's first grid_rows images, from the same noise (what the page's difference images compare to)
    reference_images: Tensor | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("images", "samples", "reference_images")}
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
    # several models side by side (sweep_models): each one's name, path, steps, samplers, guidance and rows; then
    # ``config`` is the first model's with the steps and samplers of all (the report's columns). Empty for one model
    models: list[dict[str, Any]] = field(default_factory=list)

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
            **({"models": self.models} if self.models else {}),
        })


def compute_knees(cells: list[Cell], threshold: float, meter: Meter | None = None,
                  n: int | None = None) -> dict[str, dict[str, Knee]]:
    """Per sampler and metric: the EDM point, the Kneedle point and plateau detection over NFE; with ``meter``
    (``n`` images per cell), the settled point (paired intervals of each candidate against the best cell) and
    whether the curve separates its worst cell from its best at all (knee.py)."""
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
                against = by_nfe.get(knee.against_nfe)
                if meter and against and meter.pairs(m.key, against.samples):
                    def gap(nfe, key=m.key, against=against, by_nfe=by_nfe):
                        return meter.paired_gap(key, by_nfe[nfe].samples, against.samples)
                    knee = settle(knee, gap, n or len(next(iter(against.samples.values()))))
                best, worst = by_nfe.get(knee.best_nfe), by_nfe.get(worst_nfe(knee))
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


def sweep(model, config: SweepConfig | None = None, *, device: str | torch.device = "cpu", labels: Tensor | None = None,
          on_cell: Callable[[Cell], None] | None = None, on_event: Observer | None = None,
          cancel: CancelToken | None = None) -> SweepResult:
    """Run the sweep (see the module notes).

    model             a checkpoint/run folder, built-in model name or DiffusionModel (then the schedule, shape,
                      prompts (config.prompts), decoder, evaluator and real images come from it), or the
                      ``SweepInputs`` of any denoiser D(x, sigma, cond) (its schedule, shape, labels, null class,
                      features/classify, real and floor images given by hand)
    labels            int64 [n] class per image of a model (default: config.prompts round-robin)
    on_cell           called after each finished cell (a KeyboardInterrupt raised there stops the sweep cleanly)
    on_event, cancel  Progress events (task "sweep", one per network call) and a CancelToken (events.py);
                      cancelling stops the sweep as Ctrl-C does, with a valid partial result
    """
    return sweep_models([SweepModel("", model, config or SweepConfig())], device=device, labels=labels,
                        on_cell=on_cell, on_event=on_event, cancel=cancel)


@dataclass
class _Series:
    """One model's part of a sweep: its config, inputs, rows, generation request and progress-counting model."""

    name: str  # the rows' prefix ("" for a lone model: rows are labelled by their sampler alone)
    config: SweepConfig
    inputs: SweepInputs
    plan: _Plan
    request: GenerationRequest
    model: Any = None  # the DiffusionModel generating its cells, its denoiser a ProgressDenoiser
    denoiser: ProgressDenoiser | None = None

    def rows(self):
        """(row label, sampler spec, {steps: grid}) of every row of this model."""
        return [(row_label(self.name, label), spec, per) for label, spec, per in self.plan.rows]


def sweep_models(models: list[SweepModel], *, device: str | torch.device = "cpu", labels: Tensor | None = None,
                 on_cell: Callable[[Cell], None] | None = None, on_event: Observer | None = None,
                 cancel: CancelToken | None = None) -> SweepResult:
    """Sweep up to MAX_SWEEP_MODELS models side by side in one result (series.py): rows "model · sampler", the
    same seeds and prompts everywhere, each model with its own steps/samplers/guidance/spacing, every model measured
    by the first one's evaluator against the first one's convergence reference. One model is exactly ``sweep``.
    The arguments are ``sweep``'s; ``labels`` apply to every model."""
    models = list(models)
    check_models(models)
    for m in models:
        check_config(m.config)
    t0 = time.perf_counter()
    first = models[0]
    inputs, groups = _inputs(first.model, first.config, device, labels)
    all_steps = tuple(sorted({k for m in models for k in m.config.steps}))
    plan = _plan(first.config, inputs, groups, all_steps)
    if inputs.labels is not None and len(inputs.labels) != first.config.n:
        raise UsageError(f"{len(inputs.labels)} labels for n={first.config.n} images")
    series = [_Series(first.name if len(models) > 1 else "", first.config, inputs, plan,
                      _request(first.config, inputs, plan.seed, device))]
    for m in models[1:]:
        config = replace(m.config, seed=plan.seed)  # a random seed (-1) is drawn once, for every model
        other = _other_inputs(m, inputs, first.name, device, labels)
        other_plan = _plan(config, other, groups, config.steps)
        series.append(_Series(m.name, config, other, other_plan, _request(config, other, plan.seed, device)))
    meter = Meter(groups, features=inputs.features, classify=inputs.classify,
                  reference_images=inputs.reference_images, ci_resamples=plan.ci_resamples, seed=plan.seed,
                  num_classes=inputs.num_classes or (len(inputs.class_names) or None))
    f_dim = None if meter.ref_f is None else meter.ref_f.shape[1]
    notes: list[str] = []
    total = sum(s.plan.total_nfe(s.config, reference=s is series[0]) for s in series)
    for s in series:
        own = _notes(s.config, s.plan.specs, s.plan.grids, plan.ref_steps, groups, s.inputs, f_dim)
        notes += own + [row_label(s.name, note) if s.name else note for note in s.plan.grid_notes]
        model = s.inputs.generation_model()
        s.denoiser = ProgressDenoiser(model.denoiser, "sweep", total, on_event, cancel)
        s.model = replace(model, denoiser=s.denoiser)
    notes = list(dict.fromkeys(notes))
    floor, cells = None, []
    reference: dict[str, Any] = {"sampler": plan.ref_spec.name, "steps": plan.ref_steps,
                                 "grid": plan.ref_grid.describe()}
    if len(series) > 1:
        reference["model"] = first.name
    ref_images = None
    interrupted = False
    try:
        floor = _floor(inputs, meter)
        series[0].denoiser.stage = f"reference {plan.ref_spec.name} {plan.ref_steps} steps"
        start = time.perf_counter()
        ref = generate(series[0].model, replace(series[0].request, sampler=plan.ref_spec.name, grid=plan.ref_grid))
        reference.update(nfe=ref.nfe, wall_s=time.perf_counter() - start)
        meter.set_convergence_reference(ref.images)
        ref_images = ref.images[: first.config.grid_rows]
        done = series[0].denoiser.done
        for s in series:
            s.denoiser.done = done  # one progress count over every model
            for label, spec, per in s.rows():
                for steps in per:
                    s.denoiser.stage = f"{label} {steps} steps"
                    run = partial(generate, s.model, replace(s.request, sampler=spec.name, grid=per[steps]))
                    cells.append(_cell(spec, steps, run, meter, inputs.labels, first.config.grid_rows, label))
                    cells[-1].reference_images = ref_images
                    if on_cell is not None:
                        on_cell(cells[-1])
            done = s.denoiser.done
    except (KeyboardInterrupt, Cancelled):
        interrupted = True
        planned = sum(len(per) for s in series for _, _, per in s.plan.rows)
        notes.append(f"interrupted: {len(cells)} of {planned} cells finished")
    request = series[0].request
    info = {**inputs.info, "shape": list(inputs.shape), "guidance_used": request.guidance,
            "guidance_interval_used": (None if request.guidance == 1 or request.guidance_interval is None
                                       else list(request.guidance_interval))}
    samplers = tuple(dict.fromkeys(spec.name for s in series for spec in s.plan.specs))
    config = first.config if len(series) == 1 else replace(first.config, steps=all_steps, samplers=samplers)
    records = [] if len(series) == 1 else [
        model_record(s.name, s.config, s.inputs, s.request, [label for label, _, _ in s.rows()]) for s in series]
    return SweepResult(config, plan.seed, None if inputs.labels is None else inputs.labels.tolist(), groups, cells,
                       floor, reference, compute_knees(cells, config.threshold, meter), notes, info, interrupted,
                       time.perf_counter() - t0, ref_images, records)


def _other_inputs(m: SweepModel, inputs: SweepInputs, first_name: str, device, labels) -> SweepInputs:
    """A model beside the first: what generating its cells takes (no evaluator of its own: the first one's measures
    every model), checked to make images of the first one's shape from the same prompts."""
    other = m.model if isinstance(m.model, SweepInputs) else generation_inputs(m.model, m.config, device=device,
                                                                               labels=labels)
    check_compatible(first_name, inputs.generation_model(), m.name, other.generation_model())
    if other.labels is not None and inputs.labels is not None and not torch.equal(other.labels, inputs.labels):
        raise UsageError(f"{m.name!r} prompts its images with other classes than {first_name!r}: models swept side "
                         f"by side must take the same prompts")
    return other


def _inputs(model, config: SweepConfig, device, labels: Tensor | None) -> tuple[SweepInputs, tuple[str, ...]]:
    """The sweep's inputs and the metric groups it measures: a model's (``model_inputs``) or those given."""
    from diffuscope.core.model import DiffusionModel

    if isinstance(model, SweepInputs):
        if labels is not None:
            raise UsageError("give a bare denoiser's labels in its SweepInputs")
        inputs, groups = model, config.metrics or _available(model)
    elif isinstance(model, str | Path | DiffusionModel):
        inputs, groups = model_inputs(model, config, device=device, labels=labels)
    else:
        raise UsageError("a bare denoiser needs its schedule and shape: pass SweepInputs(denoiser, schedule, shape)")
    _check_inputs(config, inputs, groups)
    return inputs, groups


@dataclass(frozen=True)
class _Plan:
    """What the sweep will run: the seed, the samplers, the rows of grids and the convergence reference."""

    seed: int
    specs: list
    rows: list  # (row label, sampler spec, {steps: SigmaGrid}) per sampler and spacing
    grids: dict
    grid_notes: list[str]
    ref_spec: Any
    ref_steps: int
    ref_grid: Any
    ci_resamples: int

    def total_nfe(self, config: SweepConfig, *, reference: bool = True) -> int:
        """Network calls of the sweep (the progress total): the reference (unless told not) and every cell, per
        batch."""
        cells = sum(s.nfe(k) for _, s, per in self.rows for k in per)
        return math.ceil(config.n / config.batch_size) * (self.ref_spec.nfe(self.ref_steps) * reference + cells)


def _plan(config: SweepConfig, inputs: SweepInputs, groups: tuple[str, ...], all_steps: tuple[int, ...]) -> _Plan:
    """The plan of one model; ``all_steps``: the step counts of every model of the sweep (its reference is finer
    than the largest)."""
    from diffuscope.core.schedules import make_grid
    from diffuscope.grids.store import reference_spacing, sweep_rows
    from diffuscope.samplers import get_sampler, resolve_seed

    seed = resolve_seed(config.seed)
    specs = [get_sampler(s) for s in config.samplers]
    ref_spec = get_sampler(config.reference_sampler)
    T = inputs.schedule.num_timesteps if inputs.schedule.is_discrete else None
    if T is not None and max(config.steps) > T:
        raise UsageError(f"steps {max(config.steps)} > T={T}: this discrete-time model has only {T} timesteps")
    ref_steps = reference_steps(replace(config, steps=all_steps), T)
    # one row per sampler and spacing (`--spacing karras,tuned` side by side; tuned grids from the model folder)
    rows, grid_notes = sweep_rows(inputs.info.get("model_path"), inputs.schedule, config.samplers, config.steps,
                                  config.spacing)
    grids = {(label, k): g for label, _, per in rows for k, g in per.items()}
    ref_grid = make_grid(inputs.schedule, ref_steps, reference_spacing(config.spacing))
    ci = config.ci_resamples if config.n <= config.ci_max_n else 0
    return _Plan(seed, specs, rows, grids, grid_notes, ref_spec, ref_steps, ref_grid, ci)


def _request(config: SweepConfig, inputs: SweepInputs, seed: int, device) -> GenerationRequest:
    """Every cell's generation but its sampler and grid: the same prompts, seed and guidance. Unconditional
    sampling is unguided (nothing to guide towards). Whole batches per network call (``batch_invariant=False``):
    every cell and the reference are batched alike, and per-image calls cost ~3.5x on a CPU (mnist, n = 8;
    bench/bench_batch_invariance.py)."""
    prompts = inputs.image_prompts()
    guided = prompts is not None and config.guidance != 1
    return GenerationRequest(prompts=prompts, n=config.n, guidance=config.guidance if guided else 1.0,
                             guidance_interval=config.guidance_interval if guided else None, seed=seed,
                             batch_size=config.batch_size, device=device, batch_invariant=False)


def _floor(inputs: SweepInputs, meter: Meter) -> dict[str, Any] | None:
    """The real-vs-real floor at the same N: real images measured as if they were generated."""
    if inputs.floor_images is None or meter.ref_f is None:
        return None
    m = meter.measure(inputs.floor_images, inputs.floor_labels, convergence=False)
    return {"comparison": inputs.floor_comparison, "n": len(inputs.floor_images), "n_reference": meter.n_reference,
            "metrics": m.values, "intervals": m.intervals, "extra": m.extra}


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

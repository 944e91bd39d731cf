"""``diffuscope sweep``: quality vs steps. A grid of samplers x step counts from the same prompts and noise, each
cell measured (FD, KID, precision/recall, accuracy with the model's classifier; convergence to a high-NFE reference
always), the diminishing-returns point per sampler, and grid.png, quality.png, report.{md,json,html} in --out.
``--model`` repeats: several models side by side in one report (a distilled student beside its teacher), each with
its own default steps/samplers/guidance, all measured against the first model's reference (sweep/series.py)."""

from __future__ import annotations

import argparse
import json

from diffuscope.checks import limits, validate
from diffuscope.cli import args as types
from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER

DEFAULT_STEPS = "10,25,50,100"
DEFAULT_SAMPLERS = f"DDIM,{DEFAULT_SAMPLER}"


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="quality vs steps: samplers x step counts, measured, with the knee per sampler",
                       description="Sample the same prompts from the same initial noise with every sampler at every "
                                   "step count; measure each cell against held-out real images and against a "
                                   "high-NFE reference; report where more steps stop paying off. Ctrl-C writes "
                                   "a partial report of the finished cells (exit 130).")
    p.add_argument("--model", required=True, action="append", type=types.name, metavar="MODEL",
                   help="checkpoint folder, run folder, or a built-in model name; repeat (at most "
                        f"{limits.MAX_SWEEP_MODELS}) to sweep models side by side, e.g. a distilled student beside "
                        "its teacher: the same prompts and noise, each model's own default steps/samplers/guidance, "
                        "and every model's convergence measured against the FIRST model's converged images")
    p.add_argument("--prompt", action="append", type=types.prompt, metavar="PROMPT",
                   help="a class name or text; repeat for several, or 'all' for every class (images spread "
                        "round-robin over the prompts, the same in every cell); leave out for an unconditional "
                        "model")
    p.add_argument("--steps",
                   help=f"step counts (default {DEFAULT_STEPS}; a distilled student's: its K); ranges: 10-15, "
                        "10-50 (+10), and 5-100 [8] = 8 values spaced geometrically (log), rounded and deduplicated")
    p.add_argument("--samplers",
                   help=f"comma-separated sampler names or ids (default {DEFAULT_SAMPLERS!r}; a student's: Euler on "
                        "its own grid); stochastic ones are allowed and flagged; see `diffuscope samplers`")
    p.add_argument("--seed", type=types.seed, default=0, help="image i uses seed + i in every cell (-1 = random)")
    p.add_argument("--n", type=types.count, default=256, help="images per cell (default 256)")
    p.add_argument("--guidance", type=types.guidance,
                   help=f"classifier-free guidance scale, 1 = off (default {DEFAULT_GUIDANCE:g}, as `sample`; a "
                        "student's: 1)")
    p.add_argument("--guidance-interval", type=types.interval, metavar="LO,HI",
                   help="apply guidance only where LO < sigma <= HI, as `sample` (default: everywhere)")
    p.add_argument("--spacing", type=types.name,
                   help="sigma grid: trailing|leading|linspace (discrete models), karras, logsnr, "
                        "tuned (the model's tuned grids, `diffuscope tune-steps`); several, e.g. "
                        "karras,tuned, side by side (default: the model's)")
    p.add_argument("--reference-sampler", default="Heun", type=types.name,
                   help="deterministic sampler of the convergence reference (default Heun)")
    p.add_argument("--reference-steps", type=types.steps,
                   help="steps of the convergence reference (default max(200, 2 x the largest step count), at "
                        "most T for discrete models)")
    p.add_argument("--metrics", help="comma-separated: fd,kid,pr,accuracy,convergence (default: all when the "
                                     "model has a classifier; kid,convergence with --real; else convergence)")
    p.add_argument("--real", metavar="DATA",
                   help="for a model without a classifier (e.g. a diffusers pipeline): real images to measure KID "
                        "against in ImageNet features (a folder of PNG/JPEG images, or a built-in data set)")
    p.add_argument("--threshold", type=types.fraction, default=0.03,
                   help="diminishing returns: the tolerance, a fraction of the best value (3%%); settled at the "
                        "fewest NFE whose paired 95%% interval against the best lies inside it")
    p.add_argument("--batch-size", type=types.batch_size, default=64)
    p.add_argument("--grid-rows", type=types.int_range(1, 64, "grid_rows"), default=4,
                   help="images per sampler in grid.png")
    p.add_argument("--ci-resamples", type=types.int_range(0, 100_000, "ci_resamples"), default=200,
                   help="bootstrap resamples for the 95%% intervals (0 = none; none above n=2000)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    types.add_dtype(p)
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and sigma grids, run nothing")
    p.set_defaults(run=run)


def build_configs(args: argparse.Namespace) -> list[tuple[str, object]]:
    """(model, its config) per --model: flags given apply to every model; those left out take each model's own
    defaults (a distilled student's K steps, Euler, its grid, guidance 1; the usual ones for any other model)."""
    refs = validate.distinct(args.model, "--model", limits.MAX_SWEEP_MODELS)
    return [(ref, build_config(args, ref)) for ref in refs]


def build_config(args: argparse.Namespace, ref: str | None = None):
    """The config of the model ``ref`` (default: the first --model), its steps, samplers, spacing and guidance by
    ``resolve_sampling``'s rule, cell by cell (the student's record read before any weights load)."""
    from diffuscope.models.student import student_defaults_at
    from diffuscope.sweep import SweepConfig, check_config
    from diffuscope.sweep.config import parse_list

    ref = ref if ref is not None else args.model[0]
    steps, samplers, spacing, guidance = _sampling(args, student_defaults_at(ref))
    config = SweepConfig(
        steps=steps, samplers=samplers, prompts=tuple(args.prompt or ()), seed=args.seed, n=args.n,
        guidance=guidance, guidance_interval=args.guidance_interval, spacing=spacing,
        reference_sampler=args.reference_sampler, reference_steps=args.reference_steps,
        metrics=parse_list(args.metrics) if args.metrics else None, threshold=args.threshold,
        batch_size=args.batch_size, grid_rows=args.grid_rows, ci_resamples=args.ci_resamples, real=args.real)
    check_config(config)
    return config


def _sampling(args: argparse.Namespace, student) -> tuple[tuple[int, ...], tuple[str, ...], str | None, float]:
    """(steps, samplers, spacing, guidance) of one model by models/student.py's one rule: what the flags gave,
    else a distilled student's (``student``: its StudentDefaults, or None; its K steps, Euler, guidance 1), else
    the sweep's defaults. Every (sampler, steps) cell is resolved; the sweep has one spacing per model, so the
    student's own grid is taken where every cell resolves to it (Euler at K alone) and the model's default grid
    where the cells differ (its own grid exists only at K)."""
    from diffuscope.models.student import Sampling, resolve_sampling
    from diffuscope.sweep import parse_steps
    from diffuscope.sweep.config import parse_list

    given_steps = parse_steps(args.steps) if args.steps is not None else None
    given_samplers = parse_list(args.samplers) if args.samplers is not None else None
    if student is None:  # the sweep's own defaults are lists: DEFAULT_STEPS x DEFAULT_SAMPLERS
        given_steps = parse_steps(DEFAULT_STEPS) if given_steps is None else given_steps
        given_samplers = parse_list(DEFAULT_SAMPLERS) if given_samplers is None else given_samplers
    samplers = (None,) if given_samplers is None else given_samplers or (DEFAULT_SAMPLER,)  # () : check_config
    steps = (None,) if given_steps is None else given_steps
    cells = [resolve_sampling(student, sampler=s, steps=k, spacing=args.spacing, guidance=args.guidance,
                              fallback=Sampling(guidance=DEFAULT_GUIDANCE)) for s in samplers for k in steps]
    spacings = {c.spacing for c in cells}
    return (given_steps if given_steps is not None else (cells[0].steps,),
            given_samplers if given_samplers is not None else (cells[0].sampler,),
            spacings.pop() if len(spacings) == 1 else None, cells[0].guidance)


def _dry_run(pairs, device, dtype: str | None = None) -> int:
    from dataclasses import asdict, replace

    from diffuscope.checks.errors import UsageError
    from diffuscope.grids.store import sweep_rows
    from diffuscope.models.load import load_model
    from diffuscope.samplers import get_sampler
    from diffuscope.sweep import prompt_labels
    from diffuscope.sweep.config import reference_steps
    from diffuscope.sweep.series import check_compatible, row_label, series_names

    models = [load_model(ref, device=device, dtype=dtype) for ref, _ in pairs]
    names = series_names(models, [ref for ref, _ in pairs]) if len(pairs) > 1 else [""]
    for name, model in zip(names[1:], models[1:]):
        check_compatible(names[0], models[0], name, model)
    config, model = pairs[0][1], models[0]
    if model.conditioner.has_classes:
        _, prompts = prompt_labels(config.prompts, model.class_names, config.n)
    else:
        prompts = [p for p in (model.conditioner.check(p) for p in (config.prompts or [None])) if p is not None]
    total, batches = 0, -(-config.n // config.batch_size)
    for i, ((_, config), model, name) in enumerate(zip(pairs, models, names)):
        schedule = model.denoiser.schedule
        T = schedule.num_timesteps if schedule.is_discrete else None
        if T is not None and max(config.steps) > T:
            raise UsageError(f"steps {max(config.steps)} > T={T}: this discrete-time model has only {T} timesteps")
        if name:
            print(f"model {name}" + (" (the reference: every model's convergence is measured against its "
                                     "converged images)" if i == 0 else ""))
        print(json.dumps(asdict(config), indent=2))
        if i == 0:
            print(f"prompts: {', '.join(prompts)} (round-robin over {config.n} images)")
        rows, notes = sweep_rows(model.path, schedule, config.samplers, config.steps, config.spacing)  # tuned grids
        for label, _, per in rows:
            for steps, grid in per.items():
                print(f"{row_label(name, label)}, steps {steps} ({grid.spacing}): sigmas "
                      f"{', '.join(f'{s:.4g}' for s in grid.sigmas.tolist())}")
        for note in notes:
            print(f"note: {row_label(name, note)}")
        total += sum(spec.nfe(k) for _, spec, per in rows for k in per)
    config, schedule = pairs[0][1], models[0].denoiser.schedule
    all_steps = tuple(sorted({k for _, c in pairs for k in c.steps}))
    ref_steps = reference_steps(replace(config, steps=all_steps), schedule.num_timesteps if schedule.is_discrete
                                else None)
    total += get_sampler(config.reference_sampler).nfe(ref_steps)
    print(f"reference: {row_label(names[0], get_sampler(config.reference_sampler).name)} {ref_steps} steps; "
          f"total {total} NFE x {batches} batch(es) of up to {config.batch_size} images")
    return 0


def run(args: argparse.Namespace) -> int:
    from diffuscope.io.device import pick_device
    from diffuscope.sweep import sweep_models, write_reports
    from diffuscope.sweep.config import metric_spec

    pairs = build_configs(args)
    config = pairs[0][1]
    device = pick_device(args.device)
    if args.dry_run:
        return _dry_run(pairs, device, args.dtype)
    from diffuscope.cli.progress import TqdmObserver
    from diffuscope.io.outputs import prepare_out
    from diffuscope.models.load import load_model
    from diffuscope.sweep.series import SweepModel, series_names

    args.out = prepare_out(args.out, "sweep")  # the --out rule, before the model loads
    models = [load_model(ref, device=device, dtype=args.dtype) for ref, _ in pairs]
    names = series_names(models, [ref for ref, _ in pairs]) if len(pairs) > 1 else [""]
    series = [SweepModel(name, model, c) for name, model, (_, c) in zip(names, models, pairs)]
    bar = TqdmObserver("sweep", unit="NFE", disable=args.no_progress)
    try:  # one model: exactly `sweep`; several: side by side, checked to be comparable before any image
        result = sweep_models(series, device=device, on_event=bar)
    finally:
        bar.close()
    paths = write_reports(result, args.out)
    head = "interrupted: partial sweep" if result.interrupted else "sweep"
    print(f"{head}: {len(result.cells)} cells, n={config.n}, seed {result.seed}, {result.wall_s:.1f} s")
    if not result.interrupted:  # the answer first, in the lesson's words (report.md has its detail)
        from diffuscope.sweep.answer import sampler_answers

        for answer in sampler_answers(result):
            print(answer.headline)
    main_metric = next((k for k in ("fd", "accuracy", "conv_pixel") if k in result.metric_keys), None)
    if main_metric:
        label = metric_spec(main_metric).label
        for sampler, per in result.knees.items():
            k = per.get(main_metric)
            if k is not None:
                print(f"{sampler}: {label}: {k.note}" + (f" (Kneedle: NFE {k.kneedle_nfe})" if k.kneedle_nfe else ""))
    for note in result.notes:
        if note.startswith(("no classifier", "a prompt has no real image", "not measured")):
            print(f"note: {note}")
    for p in paths.values():
        print(p)
    return 130 if result.interrupted else 0

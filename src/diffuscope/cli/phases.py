"""``diffuscope phases``: measure what early, middle and late steps decide (see ``diffuscope.lesson.phases``)."""

from __future__ import annotations

import argparse

from diffuscope.checks import limits
from diffuscope.checks.errors import quote
from diffuscope.cli import args as types
from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER  # guidance only with --prompt


def add_parser(sub) -> None:
    p = sub.add_parser("phases", help="measure coarse-vs-fine change, commitment and step consistency",
                       description="Measure the claim 'early steps decide composition, late steps fine detail' on "
                                   "a model. Writes DIR/frequency.png, commitment.png, commitment_samples.png, "
                                   "consistency.png, consistency_samples.png, phases.json and summary.md "
                                   "(also printed).")
    p.add_argument("--model", required=True, type=types.name, help="checkpoint folder or run folder")
    p.add_argument("--prompt", type=types.prompt,
                   help="a class name, e.g. 7; omit to sample unconditionally (the null prompt), "
                                    "where the class itself is still to be decided")
    p.add_argument("--steps", type=types.steps, default=50, help="sampler steps (default 50)")
    p.add_argument("--n", type=types.int_range(-2**31, limits.MAX_N, "int"), default=64,
                   help="images for the frequency split and consistency, and "
                                                     "finishes per commitment point (>= 2, default 64)")
    p.add_argument("--seed", type=types.non_negative_int, default=0, help="image i uses seed + i (default 0)")
    p.add_argument("--spacing", type=types.name,
                   help="sigma grid: trailing|leading|linspace (discrete models), karras, logsnr, "
                        "tuned (`diffuscope tune-steps`); default: the model's")
    p.add_argument("--sampler", default=DEFAULT_SAMPLER, type=types.name,
                   help=f"deterministic sampler (default {DEFAULT_SAMPLER!r})")
    p.add_argument("--finish-sampler", default="DDPM", type=types.name,
                   help="stochastic sampler finishing the restarts "
                                                            "(default DDPM)")
    p.add_argument("--points", type=types.int_range(1, 1000, "points"), default=10,
                   help="commitment points (default 10)")
    p.add_argument("--cutoff", type=types.float_range(-1e12, 1e12, "cutoff"), default=0.125,
                   help="coarse/fine split, cycles per pixel "
                                                               "(default 0.125: a period of 8 pixels)")
    p.add_argument("--consistency-steps", default="10,25,50,100", help="step counts compared (default "
                                                                        "10,25,50,100)")
    p.add_argument("--guidance", type=types.guidance,
                   help=f"classifier-free guidance with --prompt, 1 = off (default {DEFAULT_GUIDANCE:g})")
    p.add_argument("--guidance-interval", type=types.interval, metavar="LO,HI",
                   help="with --prompt: apply guidance only where LO < sigma <= HI, as `sample` (default: everywhere)")
    p.add_argument("--classifier", metavar="PATH", help="classifier for 'same class' (default: the one "
                                                        "diffuscope.metrics finds for the model, else pixels only)")
    p.add_argument("--batch-size", type=types.batch_size, default=64)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    types.add_dtype(p)
    p.set_defaults(run=run)


def parse_steps_list(text: str) -> list[int]:
    from diffuscope.checks.errors import UsageError

    try:
        steps = [int(p) for p in str(text).split(",")]
    except ValueError:
        raise UsageError(f"malformed step list {quote(text)}: expected comma-separated integers like "
                         "10,25,50,100") from None
    if len(steps) > 100 or max(steps) > limits.MAX_STEPS:
        raise UsageError(f"--consistency-steps allows at most 100 step counts of at most {limits.MAX_STEPS} each")
    if len(steps) < 2 or min(steps) < 1 or len(set(steps)) != len(steps):
        raise UsageError(f"--consistency-steps needs at least 2 different positive step counts, got "
                         f"{quote(text)}")
    return sorted(steps)


def run(args: argparse.Namespace) -> int:
    from diffuscope.checks.errors import UsageError
    from diffuscope.grids.store import grid_for_sample
    from diffuscope.io.device import pick_device
    from diffuscope.lesson.phases_report import PhasesConfig, measure_phases, save_phases
    from diffuscope.models.load import load_model
    from diffuscope.samplers import get_sampler

    if args.n < 2:
        raise UsageError(f"--n must be at least 2, got {args.n}")
    if args.steps < 2:
        raise UsageError(f"--steps must be at least 2, got {args.steps}")
    if not get_sampler(args.sampler).deterministic:
        raise UsageError(f"--sampler must be deterministic; {get_sampler(args.sampler).name} is stochastic")
    if get_sampler(args.finish_sampler).deterministic:
        raise UsageError(f"--finish-sampler must be stochastic; {get_sampler(args.finish_sampler).name} is not")
    if not 0 < args.cutoff < 0.5**0.5:
        raise UsageError(f"--cutoff must be in (0, 0.707) cycles per pixel, got {args.cutoff}")
    if args.points < 2:
        raise UsageError(f"--points must be at least 2 (the first and the last step), got {args.points}")
    consistency_steps = parse_steps_list(args.consistency_steps)
    from diffuscope.io.outputs import prepare_out

    args.out = prepare_out(args.out, "phases")
    device = pick_device(args.device)
    model = load_model(args.model, device=device, dtype=args.dtype)
    from diffuscope.cli.progress import TqdmObserver

    bar = TqdmObserver("phases", unit="NFE")
    try:
        config = PhasesConfig(
            prompt=args.prompt, steps=args.steps, n=args.n, seed=args.seed, sampler=args.sampler,
            finish_sampler=args.finish_sampler, points=args.points, cutoff=args.cutoff,
            consistency_steps=tuple(consistency_steps), guidance=args.guidance,
            guidance_interval=args.guidance_interval, classifier=args.classifier, batch_size=args.batch_size,
            spacing=args.spacing, grid=grid_for_sample(model.path, args.sampler, args.steps, args.spacing))
        freq, commit, consist, notes = measure_phases(model, config, device=device, on_event=bar)
    finally:
        bar.close()
    paths, summary = save_phases(args.out, freq=freq, commit=commit, consist=consist, notes=notes)
    print(summary)
    for path in paths:
        print(path)
    return 0

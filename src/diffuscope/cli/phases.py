"""``diffuscope phases``: measure what early, middle and late steps decide (see ``diffuscope.lesson.phases``)."""

from __future__ import annotations

import argparse

from diffuscope.checks import limits
from diffuscope.checks.errors import quote
from diffuscope.cli import args as types
from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER  # guidance only with --prompt

PHASES_STEPS = 50  # the trajectory's default step count (a distilled student: its own K, models/student.py)
CONSISTENCY_STEPS = "10,25,50,100"


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
    p.add_argument("--steps", type=types.steps,
                   help=f"sampler steps (default {PHASES_STEPS}; a distilled student's: its K)")
    p.add_argument("--n", type=types.int_range(-2**31, limits.MAX_N, "int"), default=64,
                   help="images for the frequency split and consistency, and "
                                                     "finishes per commitment point (>= 2, default 64)")
    p.add_argument("--seed", type=types.non_negative_int, default=0, help="image i uses seed + i (default 0)")
    p.add_argument("--spacing", type=types.name,
                   help="sigma grid: trailing|leading|linspace (discrete models), karras, logsnr, "
                        "tuned (`diffuscope tune-steps`); default: the model's")
    p.add_argument("--sampler", type=types.name,
                   help=f"deterministic sampler (default {DEFAULT_SAMPLER!r}; a distilled student's: Euler on its "
                        "own grid)")
    p.add_argument("--finish-sampler", default="DDPM", type=types.name,
                   help="stochastic sampler finishing the restarts "
                                                            "(default DDPM)")
    p.add_argument("--points", type=types.int_range(1, 1000, "points"), default=10,
                   help="commitment points (default 10)")
    p.add_argument("--cutoff", type=types.float_range(-1e12, 1e12, "cutoff"), default=0.125,
                   help="coarse/fine split, cycles per pixel "
                                                               "(default 0.125: a period of 8 pixels)")
    p.add_argument("--consistency-steps", type=types.name,
                   help="step counts compared (default 10,25,50,100; a distilled student's: K/5, K/2 and K, at "
                        "least 1, as the page's)")
    p.add_argument("--guidance", type=types.guidance,
                   help=f"classifier-free guidance with --prompt, 1 = off (default {DEFAULT_GUIDANCE:g}; a "
                        "student's: 1)")
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


def student_consistency_steps(steps: int) -> str:
    """A student's step counts compared from the same noise: K/5, K/2 and K (at least 1), as the page's phases."""
    return ",".join(map(str, sorted({max(1, steps // 5), max(1, steps // 2), steps})))


def check_phases_args(args: argparse.Namespace, chosen) -> None:
    """The flags' own rules (one line each), before the model loads."""
    from diffuscope.checks.errors import UsageError
    from diffuscope.samplers import get_sampler

    if args.n < 2:
        raise UsageError(f"--n must be at least 2, got {args.n}")
    if chosen.steps < 2:
        raise UsageError(f"--steps must be at least 2, got {chosen.steps}")
    if not get_sampler(chosen.sampler).deterministic:
        raise UsageError(f"--sampler must be deterministic; {get_sampler(chosen.sampler).name} is stochastic")
    if get_sampler(args.finish_sampler).deterministic:
        raise UsageError(f"--finish-sampler must be stochastic; {get_sampler(args.finish_sampler).name} is not")
    if not 0 < args.cutoff < 0.5**0.5:
        raise UsageError(f"--cutoff must be in (0, 0.707) cycles per pixel, got {args.cutoff}")
    if args.points < 2:
        raise UsageError(f"--points must be at least 2 (the first and the last step), got {args.points}")


def run(args: argparse.Namespace) -> int:
    from diffuscope.io.device import pick_device
    from diffuscope.io.outputs import prepare_out
    from diffuscope.lesson.phases_report import PhasesConfig, measure_phases, save_phases
    from diffuscope.models.load import load_model
    from diffuscope.models.student import Sampling, resolve_sampling, student_defaults_at

    ours = Sampling(DEFAULT_SAMPLER, PHASES_STEPS)
    student = student_defaults_at(args.model)  # read before any weights load: the checks below come first
    # what was given, else a distilled student's own (K steps, Euler, its grid, guidance 1), else ours
    chosen = resolve_sampling(student, sampler=args.sampler, steps=args.steps, spacing=args.spacing,
                              guidance=args.guidance, fallback=ours)
    check_phases_args(args, chosen)
    consistency_steps = parse_steps_list(args.consistency_steps or (
        student_consistency_steps(chosen.steps) if student else CONSISTENCY_STEPS))
    args.out = prepare_out(args.out, "phases")
    device = pick_device(args.device)
    model = load_model(args.model, device=device, dtype=args.dtype)
    # guidance: with a prompt, the given one or the student's (1); else None (measure_phases: DEFAULT_GUIDANCE)
    guidance = chosen.guidance if args.prompt is not None else args.guidance
    from diffuscope.cli.progress import TqdmObserver

    bar = TqdmObserver("phases", unit="NFE")
    try:
        config = PhasesConfig(
            prompt=args.prompt, steps=chosen.steps, n=args.n, seed=args.seed, sampler=chosen.sampler,
            finish_sampler=args.finish_sampler, points=args.points, cutoff=args.cutoff,
            consistency_steps=tuple(consistency_steps), guidance=guidance,
            guidance_interval=args.guidance_interval, classifier=args.classifier, batch_size=args.batch_size,
            spacing=chosen.spacing, grid=chosen.grid(model))
        freq, commit, consist, notes = measure_phases(model, config, device=device, on_event=bar)
    finally:
        bar.close()
    paths, summary = save_phases(args.out, freq=freq, commit=commit, consist=consist, notes=notes)
    print(summary)
    for path in paths:
        print(path)
    return 0

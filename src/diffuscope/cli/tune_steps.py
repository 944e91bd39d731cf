"""``diffuscope tune-steps``: search, per step count, the sigma grid that brings a sampler closest to a high-NFE
teacher from the same noise (dynamic programming, tuning.py), evaluate it against the model's default grid on other
seeds, and store it (``--install``) with the model so that ``--spacing tuned`` uses it."""

from __future__ import annotations

import argparse

from diffuscope.checks import limits
from diffuscope.cli import args as types
from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER
from diffuscope.grids.tune import CALIBRATION_SEED

DEFAULT_STEPS = "5,8,10,12,15"


def add_parser(sub) -> None:
    p = sub.add_parser("tune-steps", help="tune the sigma grid per step count for one model and sampler",
                       description="Dynamic programming over a fine grid against a high-NFE teacher from the same "
                                   "noise (GITS, Chen et al. 2024; OSS, Pei et al. 2025). Writes tuned_grids.json "
                                   "and a report to --out; --install adds the grids to the model's folder, where "
                                   "`--spacing tuned` finds them.")
    p.add_argument("--model", required=True, help="checkpoint folder, run folder, or a built-in model name")
    p.add_argument("--steps", default=DEFAULT_STEPS, help=f"step counts to tune (default {DEFAULT_STEPS})")
    p.add_argument("--sampler", default=DEFAULT_SAMPLER, help=f"the sampler to tune (default {DEFAULT_SAMPLER!r})")
    p.add_argument("--prompt", action="append", type=types.prompt, metavar="PROMPT",
                   help="a class name; repeat for several (default: all classes, round-robin)")
    p.add_argument("--seeds", type=types.count, default=32, help="calibration images (default 32)")
    p.add_argument("--seed", type=types.non_negative_int, default=CALIBRATION_SEED,
                   help=f"calibration image i uses seed + i (default {CALIBRATION_SEED})")
    p.add_argument("--eval-seeds", type=types.int_range(0, limits.MAX_N, "count"), default=64,
                   help="evaluation images, disjoint from the calibration ones (default 64; 0 = no evaluation)")
    p.add_argument("--eval-seed", type=types.non_negative_int, default=0,
                   help="evaluation image i uses eval-seed + i (default 0, as `sample` and `sweep`)")
    p.add_argument("--teacher", default=DEFAULT_SAMPLER, help=f"deterministic teacher (default {DEFAULT_SAMPLER!r})")
    p.add_argument("--fine-steps", type=types.steps, default=100,
                   help="the teacher's steps on the model's default grid: the candidate sigmas (default 100)")
    p.add_argument("--reference-steps", type=types.steps, default=200,
                   help="steps of the evaluation reference (the teacher on the default grid; default 200)")
    p.add_argument("--refine-rounds", type=types.int_range(0, 1_000, "rounds"), default=1,
                   help="rounds of coordinate descent on the final error after the search (default 1; 0 = none)")
    p.add_argument("--learn-iterations", type=types.int_range(0, 100_000, "iterations"), default=0,
                   help="then learn the step times by gradient descent on the final error (LD3, Tong et al. 2025): "
                        "iterations of Adam per step count (default 0 = none; each costs steps x 3 network calls "
                        "on --learn-batch images)")
    p.add_argument("--learn-rate", type=types.learning_rate, default=0.02,
                   help="Adam's learning rate on the step times' log-sigma shares (default 0.02)")
    p.add_argument("--learn-batch", type=types.batch_size, default=32,
                   help="calibration images per learning iteration (default 32)")
    p.add_argument("--guidance", type=types.guidance, default=DEFAULT_GUIDANCE,
                   help=f"classifier-free guidance during tuning and evaluation (default {DEFAULT_GUIDANCE:g})")
    p.add_argument("--guidance-interval", type=types.interval, metavar="LO,HI")
    p.add_argument("--batch-size", type=types.batch_size, default=256, help="images per network call")
    p.add_argument("--install", action="store_true",
                   help="also add the grids to the model folder's tuned_grids.json (an existing different grid "
                        "for the same sampler and steps is replaced only with --replace; a grid the evaluation "
                        "finds worse than the default one is not installed)")
    p.add_argument("--replace", action="store_true",
                   help="with --install: also evaluate the grids already installed for this sampler and replace "
                        "each one the new grid beats on the evaluation seeds")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    types.add_dtype(p)
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(run=run)


def build_config(args: argparse.Namespace):
    """The flags as a ``grids.tune.TuneConfig`` (one to one)."""
    from diffuscope.grids.tune import TuneConfig
    from diffuscope.sweep import parse_steps

    return TuneConfig(steps=parse_steps(args.steps), sampler=args.sampler, prompts=tuple(args.prompt or ("all",)),
                      seeds=args.seeds, seed=args.seed, eval_seeds=args.eval_seeds, eval_seed=args.eval_seed,
                      teacher=args.teacher, fine_steps=args.fine_steps, reference_steps=args.reference_steps,
                      refine_rounds=args.refine_rounds, learn_iterations=args.learn_iterations,
                      learn_rate=args.learn_rate, learn_batch=args.learn_batch, guidance=args.guidance,
                      guidance_interval=args.guidance_interval, batch_size=args.batch_size,
                      compare_installed=args.replace)


def run(args: argparse.Namespace) -> int:
    """--out checked first (the --out rule of every command, outputs.prepare_out) and locked for the whole run:
    a second tune-steps into the same folder is refused in one line; a failed run leaves no empty folder."""
    from diffuscope.io.outputs import locked_out

    with locked_out(args.out, "tune-steps"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import json
    import shlex
    from pathlib import Path

    from diffuscope.checks.errors import UsageError
    from diffuscope.core.schedules import make_grid
    from diffuscope.grids import store
    from diffuscope.grids.tune import check_tune, install_grids, tune_grids
    from diffuscope.io.checkpoint import write_json_atomic
    from diffuscope.io.device import pick_device
    from diffuscope.models.load import load_model

    config = build_config(args)
    check_tune(config)
    if args.replace and not (args.install and args.eval_seeds):
        raise UsageError("--replace needs --install and --eval-seeds > 0 (it replaces a grid only when the "
                         "evaluation measures the new one better)")
    out = Path(args.out)
    if (out / store.TUNED_FILE).exists():
        raise UsageError(f"{out / store.TUNED_FILE} exists: choose a new --out (nothing is overwritten)")
    device = pick_device(args.device)
    model = load_model(args.model, device=device, dtype=args.dtype)

    def log(line: str) -> None:
        print(line, flush=True)

    result = tune_grids(model, config, device=device, log=log)
    result.record.update(model=str(args.model), command="diffuscope " + shlex.join(str(a) for a in args.argv))
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / store.TUNED_FILE, result.doc)
    wall = result.record["wall_s"]
    print(f"tuned {result.sampler} against {result.record['teacher']} on {args.seeds} calibration images: teacher "
          f"{wall['teacher']:.1f} s, search {wall['search']:.1f} s")
    for k, g in sorted(result.grids.items()):
        row = next((r for r in result.rows if r["steps"] == k), None)
        default = f"rmse_{make_grid(model.schedule, k).spacing}"
        ev_text = "" if row is None else (f"; RMSE to the reference {row[default]:.2f} -> {row['rmse_tuned']:.2f} "
                                          f"grey levels ({row['change']:+.0%})")
        print(f"{k} steps: {', '.join(f'{s:.4g}' for s in g.sigmas)}{ev_text}")
    if args.install:
        install_grids(model, result, replace=args.replace, log=log)
    evaluation = result.record["evaluation"]
    print(out / store.TUNED_FILE)
    print(json.dumps(evaluation) if evaluation else "no evaluation (--eval-seeds 0)")
    return 0

"""``diffuscope distill``: a K-step student from a teacher (trajectory distillation, training/distill.py)."""

from __future__ import annotations

import argparse

from diffuscope.cli import args as types


def add_parser(sub) -> None:
    from diffuscope.core.schedules import GRIDS
    from diffuscope.training.distill import MAX_CHUNK, MAX_SUBSTEPS

    p = sub.add_parser("distill", help="distill a model into a K-step student (trajectory distillation)",
                       description="Train a student, initialised from the teacher, whose one Euler step per interval "
                                   "of its K-step grid lands on the teacher's fine (guided) ODE solution (SFD, Zhou "
                                   "et al. 2024; Salimans & Ho 2022). Writes RUN_DIR/config.json, metrics.csv and "
                                   "checkpoints/step-NNNNNNN/; the student samples with K steps, Euler, its own "
                                   "grid and guidance 1 by default (docs/distillation.md).")
    p.add_argument("--model", required=True, type=types.name, metavar="TEACHER",
                   help="the teacher: a built-in model name (mnist, emoji), a run folder or a checkpoint folder "
                        "(diffusers pipelines are refused)")
    p.add_argument("--steps", required=True, type=types.steps, metavar="K", help="the student's sampling steps")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (must be new or empty unless --resume)")
    p.add_argument("--spacing", choices=[g for g in GRIDS], metavar="SPACING",
                   help=f"the student's grid: {', '.join(GRIDS)} (tuned: the teacher's tuned grid at K steps); "
                        "default: the teacher's default formula (karras)")
    p.add_argument("--substeps", type=types.int_range(1, MAX_SUBSTEPS, "substeps"), metavar="M",
                   help="the teacher's Heun sub-steps per interval (default 8)")
    p.add_argument("--guidance", type=types.guidance,
                   help="the teacher's classifier-free guidance scale (default: the model's default, 1.25; the "
                        "student learns the guided solution and samples with guidance 1)")
    p.add_argument("--max-steps", type=types.positive_int, help="optimizer steps (default 2000)")
    p.add_argument("--batch-size", type=types.batch_size, help="training pairs (x_i, i) per step (default 64)")
    p.add_argument("--lr", type=types.learning_rate, help="AdamW learning rate (default 1e-4)")
    p.add_argument("--chunk", type=types.int_range(1, MAX_CHUNK, "chunk"), metavar="N",
                   help="teacher trajectories solved per chunk (default 256)")
    p.add_argument("--chunk-steps", type=types.positive_int, metavar="S",
                   help="training steps on one chunk before the next is solved (default 50)")
    p.add_argument("--seed", type=types.int_range(0, 2**32 - 1, "seed"), help="seed of noises, prompts and batches")
    p.add_argument("--checkpoint-every", type=types.non_negative_int, help="steps between checkpoints (default 500)")
    p.add_argument("--keep-checkpoints", type=types.non_negative_int, metavar="K",
                   help="keep only the newest K checkpoints (0 = all)")
    p.add_argument("--log-every", type=types.non_negative_int, help="steps between rows of metrics.csv")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: auto (cuda when present)")
    p.add_argument("--threads", type=types.non_negative_int, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--resume", metavar="latest|CHECKPOINT", type=types.name,
                   help="continue from the newest checkpoint of RUN_DIR ('latest') or a checkpoint folder; flags "
                        "left out keep the run's recorded values (only --max-steps, --checkpoint-every, "
                        "--keep-checkpoints, --log-every, --device, --threads may change)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


_FLAGS = ("steps", "spacing", "substeps", "guidance", "max_steps", "batch_size", "lr", "chunk", "chunk_steps",
          "seed", "checkpoint_every", "keep_checkpoints", "log_every", "device", "threads")


def build_config(args: argparse.Namespace):
    from dataclasses import replace

    from diffuscope.training.distill import DistillConfig, check_distill_config, recorded_config, refuse_untrainable

    base = (recorded_config(args.out) if args.resume else None) or DistillConfig()  # resume: the run's own values
    config = replace(base, teacher=args.model,
                     **{k: getattr(args, k) for k in _FLAGS if getattr(args, k) is not None})
    check_distill_config(config)
    if args.dry_run:
        refuse_untrainable(args.model)
    return config


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    if args.dry_run:
        import json

        from diffuscope.io import config as config_io

        print(json.dumps(config_io.to_dict(config), indent=2))
        chunks = -(-config.max_steps // config.chunk_steps)
        nfe = config.steps * 2 * config.substeps - 1  # Heun: 2 NFE per sub-step, 1 for the last one to sigma = 0
        print(f"teacher: {chunks} chunk(s) x {config.chunk} trajectories x {nfe} NFE (twice the images under "
              f"guidance) = {chunks * config.chunk * nfe:,} trajectory-NFE; student: {config.max_steps} steps x "
              f"{config.batch_size} pairs")
        return 0
    from diffuscope.cli.progress import TqdmObserver
    from diffuscope.training.distill import distill

    bar = TqdmObserver("distill", unit="step", disable=args.quiet)
    try:
        result = distill(config, args.out, resume=args.resume, on_event=bar)
    finally:
        bar.close()
    print(f"distilled {result.steps} steps in {result.elapsed_s:.0f} s ({result.teacher_s:.0f} s solving teacher "
          f"trajectories; {result.pairs_per_s:.0f} pairs/s), final loss {result.final_loss:.4f}")
    print(f"student:    {result.checkpoint} ({config.steps} steps, Euler, its own grid, guidance 1 by default)")
    print(f"try:        diffuscope sample --model {result.run_dir} --out DIR")
    return 0

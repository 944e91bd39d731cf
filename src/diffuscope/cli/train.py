"""``diffuscope train``: train a prompt-conditioned diffusion model into a run folder."""

from __future__ import annotations

import argparse

from diffuscope.cli import args as types


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model on digits, mnist, emoji or a folder of images",
                       description="Train a class(prompt)-conditioned diffusion model. Writes RUN_DIR/config.json, "
                                   "metrics.csv, samples/ and checkpoints/step-NNNNNNN/.")
    p.add_argument("--data", type=types.name,
                   help="digits | mnist | emoji | scenes | PATH (a folder of PNG/JPEG images, sub-folders = classes, "
                                  "or MNIST IDX files); default: mnist, or [data].name of --config")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (must be new or empty unless --resume)")
    p.add_argument("--max-steps", type=types.positive_int, help="optimizer steps")
    p.add_argument("--batch-size", type=types.batch_size, help="global batch size")
    p.add_argument("--lr", type=types.learning_rate, help="peak learning rate")
    p.add_argument("--seed", type=types.int_range(0, 2**32 - 1, "seed"), help="training seed (data order, noise)")
    p.add_argument("--checkpoint-every", type=types.non_negative_int, help="steps between checkpoints")
    p.add_argument("--keep-checkpoints", type=types.non_negative_int, metavar="K",
                   help="keep only the newest K checkpoints (0 = all)")
    p.add_argument("--max-bad-batches", type=types.non_negative_int, metavar="N",
                   help="skip up to N batches with a non-finite loss or gradient before stopping (default 0)")
    p.add_argument("--precision", choices=("fp32", "bf16"), help="bf16 autocast (GPUs); default fp32")
    p.add_argument("--sample-every", type=types.non_negative_int, help="steps between preview grids (0 = end only)")
    p.add_argument("--image-size", type=types.image_size, help="resize the data to this size")
    p.add_argument("--conditioning", choices=("none", "class", "text"),
                   help="class: prompts are the data's class names (default; emoji: text); text: prompts are "
                        "encoded by the sentence encoder (each image's name is its prompt); none: unconditional")
    p.add_argument("--autoencoder", metavar="RUN", type=types.name,
                   help="train in this autoencoder's latent space (a `diffuscope autoencoder` run or checkpoint); "
                        "every checkpoint carries a copy of it")
    p.add_argument("--threads", type=types.non_negative_int, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--config", metavar="FILE.toml", type=types.name,
                   help="TOML config ([data], [model], [model.unet], [train]); "
                                                          "flags override it")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: auto (cuda when present)")
    p.add_argument("--resume", metavar="latest|CHECKPOINT", type=types.name,
                   help="continue from the newest checkpoint of RUN_DIR "
                                                                 "('latest') or from a checkpoint folder")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from diffuscope.training import config as run_config

    overrides = {
        "data": {"name": args.data, "image_size": args.image_size},
        "model": {"conditioning": args.conditioning, "autoencoder": args.autoencoder},
        "train": {"max_steps": args.max_steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                  "checkpoint_every": args.checkpoint_every, "sample_every": args.sample_every,
                  "keep_checkpoints": args.keep_checkpoints, "max_bad_batches": args.max_bad_batches,
                  "precision": args.precision, "device": args.device, "threads": args.threads},
    }
    config = run_config.resolve(args.data, args.config, overrides)
    if args.dry_run:
        print(run_config.to_json(config))
        return 0
    from diffuscope.cli.progress import TqdmObserver
    from diffuscope.training import train

    bar = TqdmObserver("train", unit="step", disable=args.quiet)
    try:
        result = train(config, args.out, resume=args.resume, on_event=bar)
    finally:
        bar.close()
    if result.checkpoint is None:  # not rank 0 of a data-parallel run
        return 0
    print(f"trained {result.steps} steps in {result.elapsed_s:.0f} s ({result.images_per_s:.0f} images/s), "
          f"final loss {result.final_loss:.4f}")
    print(f"checkpoint: {result.checkpoint}")
    print(f"samples:    {result.run_dir / 'samples'}")
    return 0

"""``diffuscope autoencoder``: train the KL autoencoder whose latent space a latent diffusion model works in."""

from __future__ import annotations

import argparse

from diffuscope.cli import args as types


def add_parser(sub) -> None:
    p = sub.add_parser("autoencoder", help="train the autoencoder of a latent diffusion model",
                       description="Train a KL-regularised autoencoder (Rombach et al. 2022) into a run folder "
                                   "(RUN_DIR/config.json, metrics.csv, eval.csv, checkpoints/step-NNNNNNN/). Reports "
                                   "the reconstruction PSNR on held-out images and the latent scale factor "
                                   "(1 / std of the latents). Pass the run folder to `train --autoencoder`.")
    p.add_argument("--data", default="emoji", help="emoji | scenes | digits | mnist | PATH (default: emoji)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (must be new or empty unless --resume)")
    p.add_argument("--image-size", type=types.image_size, help="resize the data to this size (emoji: 32 or 64)")
    p.add_argument("--latent-channels", type=types.latent_channels, help="channels of the latent (default 4)")
    p.add_argument("--downsample", type=int, choices=(1, 2, 4, 8),
                   help="latent side = image side / this (default 2: 32x32x3 -> 16x16x4)")
    p.add_argument("--base-channels", type=types.base_channels, help="width of the first level (default 32)")
    p.add_argument("--max-steps", type=types.positive_int, help="optimizer steps (default 6000)")
    p.add_argument("--batch-size", type=types.batch_size, help="batch size (default 32)")
    p.add_argument("--lr", type=types.learning_rate, help="peak learning rate (default 2e-3)")
    p.add_argument("--seed", type=types.int_range(0, 2**32 - 1, "seed"),
                   help="initialisation, data order and posterior noise")
    p.add_argument("--checkpoint-every", type=types.non_negative_int, help="steps between checkpoints")
    p.add_argument("--eval-every", type=types.non_negative_int, help="steps between held-out PSNR evaluations")
    p.add_argument("--keep-checkpoints", type=types.non_negative_int, metavar="K",
                   help="keep only the newest K checkpoints (0 = all)")
    p.add_argument("--threads", type=types.threads, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: auto (cuda when present)")
    p.add_argument("--resume", metavar="latest|CHECKPOINT", help="continue from the newest checkpoint of RUN_DIR "
                                                                 "('latest') or from a checkpoint folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from diffuscope.io import config as config_io
    from diffuscope.nets.codec import load_codec
    from diffuscope.training.autoencoder import AutoencoderRunConfig, levels_for, train_autoencoder

    channel_mult, blocks = levels_for(args.downsample) if args.downsample else (None, None)
    config = config_io.merge(AutoencoderRunConfig(), {
        "data": {"name": args.data, "image_size": args.image_size},
        "model": {"latent_channels": args.latent_channels, "base_channels": args.base_channels,
                  "channel_mult": channel_mult, "num_res_blocks": blocks},
        "train": {"max_steps": args.max_steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                  "checkpoint_every": args.checkpoint_every, "eval_every": args.eval_every,
                  "keep_checkpoints": args.keep_checkpoints, "threads": args.threads, "device": args.device},
    })
    result = train_autoencoder(config, args.out, resume=args.resume, progress=not args.quiet)
    c, h, w = load_codec(result.checkpoint).latent_shape
    print(f"trained {result.steps} steps in {result.elapsed_s:.0f} s on {result.n_train} images; held-out PSNR "
          f"{result.psnr_heldout:.2f} dB on {result.n_heldout} images")
    print(f"latents {c}x{h}x{w}: std {result.latent_std:.4f}, scale factor {result.scale_factor:.5f}")
    print(f"checkpoint: {result.checkpoint}")
    return 0

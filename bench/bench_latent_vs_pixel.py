"""Does latent space pay off at 32x32? Time-to-quality of the emoji model against the same recipe in pixel space.

    python bench/bench_latent_vs_pixel.py --latent-run runs/emoji/diffusion --minutes 15 --out runs/bench-pixel

latent  the checkpoints of a `train --config configs/emoji.toml --autoencoder ...` run (scripts/train_emoji_model.sh),
        each at the training minutes its metrics.csv records.
pixel   the same recipe (configs/emoji.toml: U-Net, text conditioning, learning-rate schedule over the same
        max_steps) on the 32x32x3 pixels, no autoencoder: sigma_data 0.5 (pixels in [-1, 1]) and attention at the
        same two levels (16x16 and 8x8 instead of 8x8 and 4x4); trained here for --minutes of wall clock
        (checkpoints every --every steps), on the same machine, after (not beside) the latent run.

Every checkpoint is scored the same way: retrieval top-1 / top-5 among all 1,656 emoji (metrics/retrieval.py) of
one image per prompt for --prompts fixed training prompts (bench_emoji.training_prompts), iPNDM 20 steps, guidance
1.25, seeds 0..P-1. Also the sampling cost per image (ms, 20 steps with guidance, 64 images per batch) of each final
model. Prints both curves (minutes of training -> top-1) side by side; --json writes them.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from dataclasses import replace
from pathlib import Path

from bench_emoji import training_prompts

from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS
from diffuscope.data import load_dataset
from diffuscope.generation.generate import GenerationRequest, generate
from diffuscope.io.checkpoint import list_checkpoints
from diffuscope.metrics.retrieval import RetrievalGallery
from diffuscope.models.load import load_model
from diffuscope.training import config as run_config
from diffuscope.training import train

ROOT = Path(__file__).resolve().parents[1]


def minutes_at(run: Path) -> dict[int, float]:
    """Training minutes at each logged step (metrics.csv's elapsed_s)."""
    with open(run / "metrics.csv") as f:
        return {int(r["step"]): float(r["elapsed_s"]) / 60 for r in csv.DictReader(f)}


def score(model, prompts, gallery, by_prompt) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    gen = generate(model, GenerationRequest(prompts=tuple(prompts), guidance=DEFAULT_GUIDANCE,
                                            sampler=DEFAULT_SAMPLER, steps=DEFAULT_STEPS, batch_size=64))
    ms = 1000 * (time.perf_counter() - t0) / len(prompts)
    r = gallery.score(gen.images.clamp(-1, 1), [by_prompt[p] for p in prompts])
    return r.top1, r.top5, ms


def curve(run: Path, prompts, gallery, by_prompt) -> list[dict]:
    minutes = minutes_at(run)
    rows = []
    for ckpt in list_checkpoints(run / "checkpoints"):
        model = load_model(ckpt)
        top1, top5, ms = score(model, prompts, gallery, by_prompt)
        rows.append({"step": model.step, "minutes": minutes.get(model.step), "top1": top1, "top5": top5,
                     "ms_per_image": ms})
        print(f"  {run.name} step {model.step:>5} ({rows[-1]['minutes'] or 0:6.1f} min): top-1 {top1:.1%}, "
              f"top-5 {top5:.1%}, {ms:.0f} ms/image", flush=True)
    return rows


def pixel_config():
    config = run_config.resolve("emoji", ROOT / "configs" / "emoji.toml", {})
    unet = replace(config.model.unet, attention_resolutions=(16, 8))
    return replace(config, model=replace(config.model, sigma_data=0.5, autoencoder="", unet=unet))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latent-run", type=Path, default=ROOT / "runs" / "emoji" / "diffusion")
    ap.add_argument("--out", type=Path, required=True, help="the pixel run's folder (new, or resumed)")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    prompts = training_prompts(args.prompts)
    real = load_dataset("emoji", split="all")
    gallery = RetrievalGallery(real.images, real.class_names)
    by_prompt = {p: i for i, p in enumerate(real.class_names)}

    config = pixel_config()
    config = replace(config, train=replace(config.train, checkpoint_every=args.every, sample_every=0))
    if not list_checkpoints(args.out / "checkpoints"):
        # the pixel model's step time, measured here, sets how many steps fit the budget
        train(replace(config, train=replace(config.train, checkpoint_every=0)), args.out.with_name(
            args.out.name + "-probe"), stop_at=10)
        per_step = minutes_at(args.out.with_name(args.out.name + "-probe"))[10] * 60 / 10
        stop = max(args.every, int(args.minutes * 60 / per_step) // args.every * args.every)
        print(f"pixel model: {per_step:.2f} s/step -> {stop} steps in {args.minutes:g} min", flush=True)
        train(config, args.out, stop_at=stop)
    print("latent (the shipped recipe):")
    latent = curve(args.latent_run, prompts, gallery, by_prompt)
    print("pixel (same recipe, no autoencoder):")
    pixel = curve(args.out, prompts, gallery, by_prompt)
    if args.json:
        args.json.write_text(json.dumps({"prompts": len(prompts), "latent": latent, "pixel": pixel}, indent=2))


if __name__ == "__main__":
    main()

"""The emoji model's bars (issue 18), measured on the shipped model at the sampling defaults, 8 seeds per prompt.

    python bench/bench_emoji.py [--model emoji] [--seeds 8] [--prompts 200] [--json FILE] [--grid-dir DIR]

training prompts  200 fixed training prompts (every 8th of the 1,646, file-name order) x seeds: retrieval top-1
                  and top-5 among all 1,656 emoji (pixels at 16x16, metrics/retrieval.py); chance 1/1,656 and
                  5/1,656. Beside them, on the same prompts: the real images (the ceiling: duplicates tie) and the
                  autoencoder's reconstructions of them (the best a latent model can draw), a colour-histogram
                  distance, KID in the retrieval space and KID in EfficientNet-Lite0 ImageNet features
                  (metrics/efficientnet.py), each beside the reconstructions (floor) and 200 other real emoji.
held-out prompts  the 10 prompts training never saw (data/emoji.py HELD_OUT_PROMPTS) x seeds: top-1/top-5 and
                  the emoji most often retrieved for each (what the model draws for "green apple").
colour binding    "red heart" and "green heart" (trained) and "blue heart" (held out) x seeds: circular mean hue of
                  the saturated pixels of each image, beside the real emoji's hue.

Image i of a part is seeded i (prompts repeat seed-major: seeds 0..P-1 draw the first image of each prompt).
Prints a table; --json writes every number; --grid-dir writes emoji_heldout.png and emoji_samples.png.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from pathlib import Path

import torch

from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS
from diffuscope.data import load_dataset
from diffuscope.data.emoji import HELD_OUT_PROMPTS, emoji_prompts
from diffuscope.generation.generate import GenerationRequest, generate
from diffuscope.metrics import kernel_distance
from diffuscope.metrics.efficientnet import EfficientNetFeatures
from diffuscope.metrics.retrieval import RetrievalGallery, histogram_distance, mean_hue, retrieval_features
from diffuscope.models.load import load_model
from diffuscope.viz import save_grid


def training_prompts(count: int) -> list[str]:
    train = emoji_prompts("train")
    stride = max(1, len(train) // count)
    return list(train[::stride][:count])


def draw(model, prompts: list[str], seeds: int, args) -> torch.Tensor:
    """seeds images per prompt, [seeds * P] seed-major (image i = prompt i % P, seed i)."""
    gen = generate(model, GenerationRequest(prompts=tuple(prompts * seeds), guidance=args.guidance,
                                            sampler=args.sampler, steps=args.steps, batch_size=args.batch_size))
    return gen.images.clamp(-1, 1)


def kid(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(kernel_distance(retrieval_features(a).double().numpy(), retrieval_features(b).double().numpy(),
                                 seed=0)[0])


def circular_mean(degrees: torch.Tensor) -> float:
    d = degrees[~torch.isnan(degrees)]
    if not len(d):
        return float("nan")
    r = torch.deg2rad(d.double())
    return float(torch.rad2deg(torch.atan2(torch.sin(r).mean(), torch.cos(r).mean())) % 360)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="emoji")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    ap.add_argument("--sampler", default=DEFAULT_SAMPLER)
    ap.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    ap.add_argument("--batch-size", type=int, default=200)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--grid-dir", type=Path)
    args = ap.parse_args()
    t0 = time.perf_counter()
    model = load_model(args.model)
    c, h, _ = model.image_shape
    real = load_dataset("emoji", split="all", image_size=h, channels=c)
    gallery = RetrievalGallery(real.images, real.class_names)
    by_prompt = {p: i for i, p in enumerate(real.class_names)}
    out: dict = {"model": str(model.path), "step": model.step, "sampler": args.sampler, "steps": args.steps,
                 "guidance": args.guidance, "seeds": args.seeds, "gallery": len(gallery)}

    # training prompts
    prompts = training_prompts(args.prompts)
    targets = [by_prompt[p] for p in prompts] * args.seeds
    images = draw(model, prompts, args.seeds, args)
    gen = gallery.score(images, targets)
    real_p = real.images[[by_prompt[p] for p in prompts]]
    ceiling = gallery.score(real_p, [by_prompt[p] for p in prompts])
    recon = model.decode(model.encode(real_p)).clamp(-1, 1)  # the identity for a pixel model
    recon_r = gallery.score(recon, [by_prompt[p] for p in prompts])
    reference = real_p.repeat(args.seeds, 1, 1, 1)
    others = real.images[[i for i in range(len(real)) if real.class_names[i] not in set(prompts)][:len(prompts)]]
    out["train_prompts"] = {
        "n_prompts": len(prompts), "n_images": len(images), "top1": gen.top1, "top5": gen.top5,
        "chance_top1": 1 / len(gallery), "chance_top5": 5 / len(gallery),
        "ceiling_real": {"top1": ceiling.top1, "top5": ceiling.top5},
        "ceiling_autoencoder": {"top1": recon_r.top1, "top5": recon_r.top5},
        "colour_hist_tv": histogram_distance(images, reference),
        "colour_hist_tv_floor_reconstructions": histogram_distance(recon, real_p),
        "colour_hist_tv_other_emoji": histogram_distance(others, real_p),
        "kid_retrieval_space": kid(images, reference),
        "kid_floor_reconstructions": kid(recon, real_p),
        "kid_other_emoji": kid(others, real_p),
    }
    # KID in EfficientNet-Lite0 ImageNet features (metrics/efficientnet.py), real-vs-real floors beside it
    effnet = EfficientNetFeatures.load()
    f_real = effnet(real_p).double().numpy()
    f_gen, f_rec, f_oth = (effnet(x).double().numpy() for x in (images, recon, others))
    out["train_prompts"].update({
        "kid_efficientnet": float(kernel_distance(f_gen, f_real, seed=0)[0]),
        "kid_efficientnet_floor_reconstructions": float(kernel_distance(f_rec, f_real, seed=0)[0]),
        "kid_efficientnet_other_emoji": float(kernel_distance(f_oth, f_real, seed=0)[0]),
    })
    if args.grid_dir:
        args.grid_dir.mkdir(parents=True, exist_ok=True)
        first = images[: 16]  # seed 0 of the first 16 prompts
        save_grid(torch.cat([real_p[:16], first]), args.grid_dir / "emoji_samples.png", nrow=16, scale=2)

    # held-out prompts
    held = list(HELD_OUT_PROMPTS)
    images_h = draw(model, held, args.seeds, args)
    res_h = gallery.score(images_h, [by_prompt[p] for p in held] * args.seeds)
    nearest = {p: Counter() for p in held}
    for i, j in enumerate(res_h.nearest.tolist()):
        nearest[held[i % len(held)]][real.class_names[j]] += 1
    per_prompt = {p: {"top1": float((res_h.ranks[i::len(held)] < 1).float().mean()),
                      "top5": float((res_h.ranks[i::len(held)] < 5).float().mean()),
                      "retrieved": nearest[p].most_common(3)} for i, p in enumerate(held)}
    out["held_out"] = {"top1": res_h.top1, "top5": res_h.top5, "per_prompt": per_prompt}
    if args.grid_dir:
        order = torch.tensor([s * len(held) + i for i in range(len(held)) for s in range(args.seeds)])
        real_h = real.images[[by_prompt[p] for p in held]]
        rows = torch.cat([torch.cat([real_h[i:i + 1], images_h[order[i * args.seeds:(i + 1) * args.seeds]]])
                          for i in range(len(held))])
        save_grid(rows, args.grid_dir / "emoji_heldout.png", nrow=args.seeds + 1, scale=2)

    # colour binding
    hearts = ["red heart", "green heart", "blue heart"]
    images_c = draw(model, hearts, args.seeds, args)
    hues = mean_hue(images_c)
    real_hues = mean_hue(real.images[[by_prompt[p] for p in hearts]])
    out["colour_binding"] = {p: {"mean_hue_generated": circular_mean(hues[i::len(hearts)]),
                                 "hues_generated": [round(float(v), 1) for v in hues[i::len(hearts)]],
                                 "hue_real": float(real_hues[i])} for i, p in enumerate(hearts)}
    out["wall_s"] = time.perf_counter() - t0

    tp = out["train_prompts"]
    print(f"model {out['model']} (step {out['step']}), {args.sampler} {args.steps} steps, guidance {args.guidance}, "
          f"{args.seeds} seeds per prompt, gallery {len(gallery)} emoji")
    print(f"training prompts ({tp['n_prompts']} x {args.seeds}): top-1 {tp['top1']:.1%}, top-5 {tp['top5']:.1%} "
          f"(chance {tp['chance_top1']:.2%} / {tp['chance_top5']:.2%}; real images {tp['ceiling_real']['top1']:.1%}"
          f" / {tp['ceiling_real']['top5']:.1%}; autoencoder reconstructions {tp['ceiling_autoencoder']['top1']:.1%}"
          f" / {tp['ceiling_autoencoder']['top5']:.1%})")
    print(f"  colour histogram TV {tp['colour_hist_tv']:.3f} (reconstructions "
          f"{tp['colour_hist_tv_floor_reconstructions']:.3f}, other emoji {tp['colour_hist_tv_other_emoji']:.3f}); "
          f"KID (retrieval space) {tp['kid_retrieval_space']:.3f} (reconstructions "
          f"{tp['kid_floor_reconstructions']:.3f}, other emoji {tp['kid_other_emoji']:.3f})")
    print(f"  KID (EfficientNet-Lite0 features) {tp['kid_efficientnet']:.4f} (reconstructions "
          f"{tp['kid_efficientnet_floor_reconstructions']:.4f}, other emoji {tp['kid_efficientnet_other_emoji']:.4f})")
    ho = out["held_out"]
    print(f"held-out prompts ({len(held)} x {args.seeds}): top-1 {ho['top1']:.1%}, top-5 {ho['top5']:.1%}")
    for p, r in ho["per_prompt"].items():
        got = ", ".join(f"{name} x{k}" for name, k in r["retrieved"])
        print(f"  {p:>14}: top-1 {r['top1']:.0%}, top-5 {r['top5']:.0%}; nearest: {got}")
    for p, r in out["colour_binding"].items():
        print(f"colour binding {p!r}: mean hue {r['mean_hue_generated']:.0f} deg (real {r['hue_real']:.0f}); "
              f"per image {r['hues_generated']}")
    print(f"wall {out['wall_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=lambda v: None if isinstance(v, float)
                                        and math.isnan(v) else v))


if __name__ == "__main__":
    main()

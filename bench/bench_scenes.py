"""The scenes evaluator's table (issue 31, metrics/scenes.py) for a model, or for data-set images (ground truth) or
uniform noise (chance), on the fixed evaluation set: 92 captions x 2 seeds.

    python bench/bench_scenes.py --model RUN [--steps 25] [--sampler NAME] [--guidance 3] [--json FILE] [--grid FILE]
    python bench/bench_scenes.py --real        # data-set scenes drawn to each caption: the evaluator's ceiling
    python bench/bench_scenes.py --noise       # uniform noise images: chance

Rows: single-object found-rate, two-object both-found, relation right (where the caption states one), background
right (where it names one), each for training names and for the held-out names; the spread: the mean distance
between the two seeds' centres of an object, as a fraction of the canvas, for captions that leave layout open.
Rates with Wilson 95% intervals, the spread with a percentile bootstrap interval. Seed s of caption p is generation
seed 10,000 s + p. The matcher runs on one torch thread (faster than two on a shared 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict

import torch

from diffuscope.checks.errors import UsageError
from diffuscope.cli import args as types
from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS
from diffuscope.metrics.scenes import (
    CANVAS,
    SceneJudge,
    evaluate_scenes,
    evaluation_set,
    flat_specs,
    format_report,
    real_scene_images,
)

SEED_STRIDE = 10_000


def model_images(model_name: str, specs, seeds: int, args) -> torch.Tensor:
    """[seeds, prompts, 3, 64, 64]: the model's images of every caption, one generation call per seed."""
    import torch.nn.functional as F

    from diffuscope.generation.generate import GenerationRequest, generate
    from diffuscope.models.load import load_model

    model = load_model(model_name)
    if model.image_shape[0] != 3 or not model.conditioner.takes_prompts:
        raise UsageError(f"--model {model_name}: the scenes evaluator needs an RGB text-to-image model")
    out = []
    for s in range(seeds):
        gen = generate(model, GenerationRequest(prompts=tuple(sp.caption for sp in specs), guidance=args.guidance,
                                                sampler=args.sampler, steps=args.steps, seed=SEED_STRIDE * s,
                                                batch_size=args.batch_size, batch_invariant=False))
        images = gen.images.clamp(-1, 1).float()
        if images.shape[-1] != CANVAS:
            images = F.interpolate(images, size=(CANVAS, CANVAS), mode="bilinear", align_corners=False)
        out.append(images)
    return torch.stack(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=types.name, help="a run folder, checkpoint or shipped model name")
    source.add_argument("--real", action="store_true", help="data-set scenes drawn to each caption")
    source.add_argument("--noise", action="store_true", help="uniform noise images")
    p.add_argument("--seeds", type=types.int_range(2, 16, "seeds"), default=2, help="images per caption (2)")
    p.add_argument("--steps", type=types.steps, default=DEFAULT_STEPS)
    p.add_argument("--sampler", type=types.name, default=DEFAULT_SAMPLER)
    p.add_argument("--guidance", type=types.guidance, default=DEFAULT_GUIDANCE)
    p.add_argument("--batch-size", type=types.batch_size, default=64)
    p.add_argument("--json", type=types.name, metavar="FILE", help="write every row as JSON")
    p.add_argument("--grid", type=types.name, metavar="FILE.png", help="save the first seed's images as a grid")
    args = p.parse_args(argv)
    try:
        torch.set_num_threads(1)
        groups = evaluation_set()
        specs = flat_specs(groups)
        t0 = time.perf_counter()
        if args.model:
            images = model_images(args.model, specs, args.seeds, args)
        elif args.real:
            images = real_scene_images(specs, tuple(range(args.seeds)))
        else:
            g = torch.Generator().manual_seed(0)
            images = torch.rand((args.seeds, len(specs), 3, CANVAS, CANVAS), generator=g) * 2 - 1
        t1 = time.perf_counter()
        report = evaluate_scenes(SceneJudge(), groups, images)
        t2 = time.perf_counter()
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    what = args.model or ("data-set scenes" if args.real else "uniform noise")
    print(f"scenes evaluation of {what}: {len(specs)} captions x {args.seeds} seeds "
          f"(images {t1 - t0:.0f} s, matching {t2 - t1:.0f} s)")
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"source": what, "rows": {k: asdict(v) for k, v in report.rows.items()}}, f, indent=1)
    if args.grid:
        from diffuscope.viz import save_grid

        save_grid(images[0], args.grid, nrow=len(specs) // 4 or 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

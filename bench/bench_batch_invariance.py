"""The cost of batch-invariant generation (core/batch_invariance.py): the shipped models sampled batched
(``GenerationRequest(batch_invariant=False)``: one network call per batch, CFG's halves together) and per image (the
default: one call per image, of its two CFG rows when guided), side by side, with whether each is batch-invariant
(the first images of the batch against the same seeds made one by one).

    python bench/bench_batch_invariance.py [--n 32] [--batch 32] [--repeats 3] [--device cpu] [--json PATH]

Each cell is the best of --repeats runs of --n images (default sampler, steps and guidance), as wall seconds and as
this process's CPU seconds (time.process_time, all threads: steadier than wall time on a shared machine); the
ratios are per-image / batched.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS
from diffuscope.generation.generate import GenerationRequest, generate
from diffuscope.models.load import load_model

PROMPTS = {"mnist": ("7", "3"), "emoji": ("red apple", "crying cat")}


def timed(model, request: GenerationRequest, repeats: int) -> tuple[float, float, torch.Tensor]:
    """(best wall s, best CPU s, the images) over ``repeats`` runs."""
    wall, cpu, images = float("inf"), float("inf"), None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        images = generate(model, request).images
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return wall, cpu, images


def invariant(model, request: GenerationRequest, images: torch.Tensor, k: int = 3) -> bool:
    """The first k images of the batch against the same seeds generated alone (bit-identical or not)."""
    for i in range(k):
        one = generate(model, GenerationRequest(**{**request.__dict__, "prompts": (request.prompts[i % 2],), "n": 1,
                                                   "seed": request.seed + i, "batch_size": 1})).images
        if not torch.equal(one[0], images[i]):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []
    print(f"n={args.n}, batch {args.batch}, {DEFAULT_SAMPLER} {DEFAULT_STEPS} steps, {args.device}, "
          f"{torch.get_num_threads()} threads; wall s and CPU s, batched | per image")
    print(f"{'model':8} {'guidance':>8} {'wall':>7} {'wall':>7} {'ratio':>6} {'cpu':>7} {'cpu':>7} {'ratio':>6}  "
          "invariant (batched / per image)")
    for name, prompts in PROMPTS.items():
        model = load_model(name, device=args.device)
        for guidance in (1.0, DEFAULT_GUIDANCE):
            batched_request, request = (
                GenerationRequest(prompts=prompts, n=args.n, seed=11, guidance=guidance, batch_size=args.batch,
                                  device=args.device, batch_invariant=flag) for flag in (False, True))
            batched, batched_cpu, images_b = timed(model, batched_request, args.repeats)
            single, single_cpu, images_p = timed(model, request, args.repeats)
            row = {"model": name, "guidance": guidance, "batched_s": batched, "per_image_s": single,
                   "ratio": single / batched, "batched_cpu_s": batched_cpu, "per_image_cpu_s": single_cpu,
                   "cpu_ratio": single_cpu / batched_cpu,
                   "invariant_batched": invariant(model, batched_request, images_b),
                   "invariant_per_image": invariant(model, request, images_p)}
            rows.append(row)
            print(f"{name:8} {guidance:8g} {batched:7.2f} {single:7.2f} {single / batched:6.2f} {batched_cpu:7.2f} "
                  f"{single_cpu:7.2f} {single_cpu / batched_cpu:6.2f}  {row['invariant_batched']} / "
                  f"{row['invariant_per_image']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n": args.n, "batch": args.batch, "device": args.device, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

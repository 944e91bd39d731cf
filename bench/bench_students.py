"""A distilled student side by side with its teacher (issue 32; docs/distillation.md): the same N noises and prompts
through both, judged by the teacher's evaluator (mnist: the shipped classifier; emoji: the retrieval judge).

    python bench/bench_students.py --teacher mnist --student mnist-4step [--n 1024] [--threads 1] [--json PATH]

Rows: the teacher's converged images (Heun, --reference-steps, the teacher's guidance as distilled), the teacher at
its default sampler and --teacher-steps, and the student at --student-steps (Euler; at its K steps its own grid,
guidance 1). Per row: accuracy (retrieval top-1 for emoji) with its 95% interval, the paired difference to the
teacher's best row (image i is made from seed i in every row, so one resample of image indices serves both), the
RMSE of each image to the teacher's converged image from the same noise in 8-bit grey levels (mean and 95%
interval, and the share of images within 3 levels), network calls per image and the wall time. The issue's bar: at
K NFE the student's accuracy within 1 point of the teacher's best and its RMSE <= 3 grey levels. NFE counts denoiser
calls per image; a guided call runs the network on two rows (conditional and unconditional).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from diffuscope.core.defaults import DEFAULT_SAMPLER
from diffuscope.generation.generate import GenerationRequest, generate
from diffuscope.grids.store import grid_for
from diffuscope.metrics.evaluation import Evaluator
from diffuscope.metrics.stats import bootstrap_ci, paired_difference_ci
from diffuscope.models.load import load_model
from diffuscope.models.student import student_defaults

GREY = 127.5  # [-1, 1] -> 8-bit levels


def prompts_for(model, evaluator: Evaluator, n: int, seed: int) -> tuple[tuple[str, ...], torch.Tensor]:
    """(prompt of image i, the class/gallery index the judge should find): classes round-robin, or for a text
    model a seeded draw of n of the judge's prompts (without replacement while they last)."""
    names = evaluator.class_names
    if not evaluator.is_retrieval:
        labels = torch.arange(n) % len(names)
        return tuple(names[int(c)] for c in labels), labels
    g = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(names), generator=g) for _ in range(-(-n // len(names)))])[:n]
    prompts = tuple(names[int(i)] for i in order)
    return prompts, evaluator.labels_for(prompts)


def run_row(model, prompts, request: dict) -> tuple[torch.Tensor, int, float]:
    """(clamped pixel images, network calls per image, wall s)."""
    t0 = time.perf_counter()
    out = generate(model, GenerationRequest(prompts=prompts, n=len(prompts), batch_invariant=False, **request))
    return out.images.clamp(-1, 1), out.nfe, time.perf_counter() - t0


def measure(name: str, images, correct_best, evaluator, labels, reference, nfe: int, wall: float) -> dict:
    correct = (evaluator.classify(images) == labels).float().numpy()
    acc = bootstrap_ci(np.mean, correct)
    rmse = ((images - reference) ** 2).flatten(1).mean(1).sqrt().numpy() * GREY
    rmse_ci = bootstrap_ci(np.mean, rmse)
    row = {"row": name, "nfe": nfe, "wall_s": round(wall, 1), "accuracy": acc.to_dict(),
           "rmse_grey": rmse_ci.to_dict(), "within_3_grey": float(np.mean(rmse <= 3.0)), "correct": correct}
    if correct_best is not None:
        row["vs_best"] = paired_difference_ci(np.mean, correct, correct_best).to_dict()
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True)
    p.add_argument("--student", required=True)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reference-steps", type=int, default=25, help="Heun steps of the teacher's converged images")
    p.add_argument("--teacher-steps", default="4,10,25", help=f"the teacher at its default sampler ({DEFAULT_SAMPLER})")
    p.add_argument("--student-steps", default="4,2,1")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    teacher, student = load_model(args.teacher), load_model(args.student)
    record = student_defaults(student)
    if record is None:
        raise SystemExit(f"{args.student} is not a distilled student (no student record)")
    guidance = float(student.run_config["student"]["teacher"].get("guidance", 1.25))
    evaluator = Evaluator.for_model(teacher, require=True)
    prompts, labels = prompts_for(teacher, evaluator, args.n, args.seed)
    common = {"seed": args.seed, "batch_size": args.batch_size}
    judged = "retrieval top-1" if evaluator.is_retrieval else "classifier"
    print(f"{args.student} (K = {record.steps}, teacher {record.teacher}) vs {args.teacher}: n = {args.n}, "
          f"{torch.get_num_threads()} threads; accuracy = {judged}")

    reference, ref_nfe, ref_wall = run_row(teacher, prompts, {**common, "sampler": "Heun",
                                                              "steps": args.reference_steps, "guidance": guidance})
    rows = [measure(f"teacher Heun {args.reference_steps} (converged)", reference, None, evaluator, labels, reference,
                    ref_nfe, ref_wall)]
    for steps in (int(s) for s in args.teacher_steps.split(",") if s):
        images, nfe, wall = run_row(teacher, prompts, {**common, "sampler": DEFAULT_SAMPLER, "steps": steps,
                                                       "guidance": guidance})
        rows.append(measure(f"teacher {DEFAULT_SAMPLER} {steps}", images, None, evaluator, labels, reference, nfe,
                            wall))
    best = max(rows, key=lambda r: r["accuracy"]["estimate"])
    for r in rows:
        r["vs_best"] = paired_difference_ci(np.mean, r["correct"], best["correct"]).to_dict()
    for steps in (int(s) for s in args.student_steps.split(",") if s):
        spacing = record.spacing_for(record.sampler, steps)
        grid = grid_for(student.path, student.schedule, steps, spacing, record.sampler)  # its own grid at K
        images, nfe, wall = run_row(student, prompts, {**common, "sampler": record.sampler, "grid": grid,
                                                       "guidance": record.guidance})
        rows.append(measure(f"student {record.sampler} {steps}", images, best["correct"], evaluator, labels,
                            reference, nfe, wall))

    print(f"{'row':34s} {'calls':>5s} {'wall s':>7s} {'accuracy % (95%)':>20s} {'vs best, points (95%)':>24s} "
          f"{'RMSE grey (95%)':>18s} {'<=3 grey':>8s}")
    for r in rows:
        a, d, e = r["accuracy"], r["vs_best"], r["rmse_grey"]
        print(f"{r['row']:34s} {r['nfe']:5d} {r['wall_s']:7.1f} "
              f"{100 * a['estimate']:6.1f} [{100 * a['low']:5.1f},{100 * a['high']:5.1f}] "
              f"{100 * d['estimate']:+7.1f} [{100 * d['low']:+5.1f},{100 * d['high']:+5.1f}]   "
              f"{e['estimate']:5.2f} [{e['low']:5.2f},{e['high']:5.2f}] {100 * r['within_3_grey']:7.1f}%")
    k = next(r for r in rows if r["row"] == f"student {record.sampler} {record.steps}")
    met_acc = k["vs_best"]["estimate"] >= -0.01
    settled = k["vs_best"]["low"] >= -0.01
    print(f"at {record.steps} steps the student's accuracy is {100 * k['vs_best']['estimate']:+.1f} points from the "
          f"teacher's best ({best['row']}): {'within' if met_acc else 'NOT within'} 1 point"
          f"{' (settled: the whole 95% interval is)' if settled else ' (not settled by the 95% interval)'}; "
          f"RMSE to the converged teacher {k['rmse_grey']['estimate']:.2f} grey levels "
          f"({'<=' if k['rmse_grey']['estimate'] <= 3 else '>'} 3); wall time vs the converged teacher "
          f"{ref_wall / max(k['wall_s'], 1e-9):.0f}x faster")
    if args.json:
        for r in rows:
            r.pop("correct")
        with open(args.json, "w") as f:
            json.dump({"teacher": args.teacher, "student": args.student, "n": args.n, "seed": args.seed,
                       "best": best["row"], "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

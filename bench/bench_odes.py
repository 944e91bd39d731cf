"""The ODE both ways on a shipped (or any) model: tuned grids against the default grid, and inversion round trips.

    python bench/bench_odes.py --part tuned  [--model mnist] [--n 64] [--reference-steps 100]
    python bench/bench_odes.py --part invert [--model mnist] [--n 200] [--steps 10,25,50,100] [--samplers iPNDM]
    python bench/bench_odes.py --part fd     [--model mnist] [--n 2048] [--steps 10,12] [--grids FILE ...]

tuned:  for every grid in the model's tuned_grids.json, the mean per-image RMSE (grey levels) to a high-NFE
        reference (the default sampler on the default grid) from the same noise, seeds 0..n-1 (disjoint from the
        calibration seeds of `diffuscope tune-steps`), default grid vs tuned grid, side by side in one run, at the
        default guidance. (The FD targets are measured by `diffuscope sweep --spacing tuned`, docs/benchmarks.md.)
invert: n real images (the model's data set, --split test by default: the first n held-out ones), each inverted
        with its true class (a text model: its own name) and guidance 1, regenerated on the same grid (a latent
        model encodes first and decodes after; errors on decoded pixels); the fraction within one grey level RMSE,
        the median and the 90th percentile RMSE, per sampler and step count.
fd:     FD in the model's classifier features at a larger N than the sweep's 256, for one step count at a time:
        the default grid, the model's installed tuned grid and the grids of any other tuned_grids.json (--grids,
        e.g. an older version of the model's file), each against the real held-out images and, paired, against the
        default grid with --reference-steps (what "the best" converges to). Seeds 0..n-1 and prompts round-robin
        over the classes, as the sweep; 95% paired bootstrap intervals of each difference.

Prints a table and writes JSON with --json FILE.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER
from diffuscope.core.schedules import make_grid
from diffuscope.grids import store as tuned_grids
from diffuscope.grids import tuning
from diffuscope.models.load import load_model
from diffuscope.samplers import get_sampler, make_generators, randn
from diffuscope.samplers.inversion import round_trip


def part_tuned(model, args) -> list[dict]:
    u = model.config.unet
    shape = (u.in_channels, u.image_size, u.image_size)
    schedule = model.denoiser.schedule
    denoiser = model.guided(args.guidance)
    labels = torch.arange(args.n) % u.num_classes
    noise = randn((args.n, *shape), make_generators(0, args.n))
    t0 = time.perf_counter()
    ref = tuning.solve(denoiser, noise, make_grid(schedule, args.reference_steps).sigmas, sampler=DEFAULT_SAMPLER,
                       cond=labels, batch_size=args.batch_size)
    print(f"reference: {DEFAULT_SAMPLER} {args.reference_steps} steps, {args.n} images, "
          f"{time.perf_counter() - t0:.0f} s")
    rows = []
    for sampler_id, table in tuned_grids.load_tuned(model.path)["grids"].items():
        name = get_sampler(sampler_id).name
        for steps in sorted(table, key=int):
            k = int(steps)
            row = {"sampler": name, "steps": k}
            for label, sigmas in (("default", make_grid(schedule, k).sigmas),
                                  ("tuned", torch.tensor(table[steps], dtype=torch.float64))):
                images = tuning.solve(denoiser, noise, sigmas, sampler=name, cond=labels, batch_size=args.batch_size)
                row[label] = float(tuning.rmse_per_image(images, ref).mean()) * 127.5
            row["change"] = row["tuned"] / row["default"] - 1
            rows.append(row)
            print(f"{name:10s} {k:4d} steps: RMSE {row['default']:6.2f} (default grid) -> {row['tuned']:6.2f} "
                  f"(tuned) grey levels, {row['change']:+.0%}", flush=True)
    return rows


def part_fd(model, args) -> list[dict]:
    from diffuscope.metrics.distances import frechet_distance
    from diffuscope.metrics.evaluation import Evaluator
    from diffuscope.metrics.stats import fd_interval, paired_difference_ci
    from diffuscope.sweep import prompt_labels

    evaluator = Evaluator.for_model(model, require=True)
    labels = prompt_labels(("all",), model.class_names, args.n)[0]
    cond = model.conditioner.labels(labels)
    real = evaluator.features(evaluator.real_sets(labels).reference).numpy()
    schedule = model.denoiser.schedule
    denoiser = model.guided(args.guidance)
    noise = randn((args.n, *model.sample_shape), make_generators(0, args.n))

    def features(sigmas) -> torch.Tensor:
        images = tuning.solve(denoiser, noise, sigmas, sampler=DEFAULT_SAMPLER, cond=cond, batch_size=args.batch_size)
        return evaluator.features(images).numpy()

    t0 = time.perf_counter()
    best = features(make_grid(schedule, args.reference_steps).sigmas)
    best_fd = frechet_distance(best, real)
    print(f"reference: {DEFAULT_SAMPLER} {args.reference_steps} steps (default grid), {args.n} images: FD "
          f"{best_fd:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    sources = [("installed", tuned_grids.tuned_table(model.path, DEFAULT_SAMPLER))]
    for path in args.grids or ():
        with open(path) as f:
            table = tuned_grids.check_tuned(json.load(f))["grids"].get(get_sampler(DEFAULT_SAMPLER).id, {})
        sources.append((path, {int(k): v for k, v in table.items()}))
    rows = []
    for k in (int(s) for s in args.steps.split(",")):
        default = make_grid(schedule, k)
        grids = [(f"{default.spacing} grid", default.sigmas)]
        grids += [(f"tuned ({name})", torch.tensor(t[k], dtype=torch.float64)) for name, t in sources if k in t]
        for label, sigmas in grids:
            f = features(sigmas)
            fd = fd_interval(f, real, n_resamples=args.resamples)
            gap = paired_difference_ci(frechet_distance, f, best, real, n_resamples=args.resamples)
            row = {"steps": k, "grid": label, "sigmas": [round(float(s), 6) for s in sigmas], "n": args.n,
                   "fd": fd.to_dict(), "fd_reference": best_fd, "ratio": fd.estimate / best_fd,
                   "minus_reference": gap.to_dict()}
            rows.append(row)
            print(f"{k:3d} steps, {label:40s} FD {fd.estimate:.4f} [{fd.low:.3f}, {fd.high:.3f}] = "
                  f"{row['ratio']:.3f}x the reference; minus the reference {gap.estimate:+.4f} "
                  f"[{gap.low:+.4f}, {gap.high:+.4f}] (paired 95%)", flush=True)
    return rows


def part_invert(model, args) -> list[dict]:
    from diffuscope.data import load_dataset

    c, size, _ = model.image_shape
    data = model.data_name or "mnist"
    real = load_dataset(data, split=args.split, image_size=size, channels=c)
    images, labels = real.images[: args.n], real.labels[: args.n]
    conditioner = model.conditioner  # each image with its own class (or, for a text model, its own name)
    if conditioner.has_classes:
        cond = conditioner.labels(labels)
    elif conditioner.has_text:
        cond = conditioner.encode([real.class_names[int(y)] for y in labels])
    else:
        cond = None
    schedule = model.denoiser.schedule
    codec = None  # a latent model: decode(encode(x)), what the autoencoder alone gives back
    if model.codec is not None:
        with torch.inference_mode():
            codec = torch.cat([model.decode(model.encode(b)) for b in images.split(args.batch_size)]).float()
    rows = []
    for sampler in args.samplers.split(","):
        for steps in (int(s) for s in args.steps.split(",")):
            t0 = time.perf_counter()
            rt = round_trip(model.denoiser, images, make_grid(schedule, steps).sigmas, sampler=sampler, cond=cond,
                            codec=model, batch_size=args.batch_size)
            grey = rt.rmse_grey
            row = {"model": args.model, "data": f"{data} {args.split}", "sampler": get_sampler(sampler).name,
                   "steps": steps, "n": len(images),
                   "within_one_grey_level": float((grey <= 1).float().mean()),
                   "median_grey_levels": float(grey.median()), "p90_grey_levels": float(grey.quantile(0.9)),
                   "max_grey_levels": float(grey.max()), "noise_std": float(rt.noise.std()),
                   "wall_s": round(time.perf_counter() - t0, 1)}
            if codec is not None:  # the round trip against the codec's own reconstruction: what inversion loses
                to_codec = ((rt.images.float() - codec) ** 2).flatten(1).mean(1).sqrt() * 127.5
                codec_alone = ((codec - images.float()) ** 2).flatten(1).mean(1).sqrt() * 127.5
                row |= {"codec_median_grey_levels": float(codec_alone.median()),
                        "within_one_grey_level_of_codec": float((to_codec <= 1).float().mean()),
                        "median_to_codec_grey_levels": float(to_codec.median())}
                print(f"{'':10s} against the autoencoder's reconstruction: {row['within_one_grey_level_of_codec']:.1%} "
                      f"within one grey level, median {row['median_to_codec_grey_levels']:.2f} (the autoencoder alone: "
                      f"median {row['codec_median_grey_levels']:.2f})", flush=True)
            rows.append(row)
            print(f"{row['sampler']:10s} {steps:4d} steps: {row['within_one_grey_level']:.1%} within one grey level; "
                  f"median {row['median_grey_levels']:.2f}, p90 {row['p90_grey_levels']:.2f}, max "
                  f"{row['max_grey_levels']:.2f} grey levels; noise std {row['noise_std']:.3f}; "
                  f"{row['wall_s']:.0f} s", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("tuned", "invert", "fd"), required=True)
    p.add_argument("--model", default="mnist")
    p.add_argument("--n", type=int, default=None, help="images (default 64 tuned, 200 invert)")
    p.add_argument("--reference-steps", type=int, default=100)
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE, help="tuned part only")
    p.add_argument("--steps", default=None, help="invert part (default 10,25,50,100); fd part (default 10)")
    p.add_argument("--grids", nargs="*", help="fd part: other tuned_grids.json files to compare")
    p.add_argument("--resamples", type=int, default=200, help="fd part: bootstrap resamples")
    p.add_argument("--samplers", default=DEFAULT_SAMPLER, help="invert part, comma-separated")
    p.add_argument("--split", choices=("test", "train", "all"), default="test",
                   help="invert part: which real images (default the held-out test split)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--json", help="write the rows to this file")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.n = args.n or {"tuned": 64, "invert": 200, "fd": 2048}[args.part]
    args.steps = args.steps or ("10" if args.part == "fd" else "10,25,50,100")
    model = load_model(args.model)
    t0 = time.perf_counter()
    rows = {"tuned": part_tuned, "invert": part_invert, "fd": part_fd}[args.part](model, args)
    print(f"total {time.perf_counter() - t0:.0f} s, {torch.get_num_threads()} thread(s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()

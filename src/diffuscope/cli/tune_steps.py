"""``diffuscope tune-steps``: search, per step count, the sigma grid that brings a sampler closest to a high-NFE
teacher from the same noise (dynamic programming, tuning.py), evaluate it against the model's default grid on other
seeds, and store it (``--install``) with the model so that ``--spacing tuned`` uses it."""

from __future__ import annotations

import argparse

from diffuscope.cli import args as types
from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER

DEFAULT_STEPS = "5,8,10,12,15"
CALIBRATION_SEED = 1_000_000  # far from the seeds users and the sweep start at (0): calibration and evaluation differ


def add_parser(sub) -> None:
    p = sub.add_parser("tune-steps", help="tune the sigma grid per step count for one model and sampler",
                       description="Dynamic programming over a fine grid against a high-NFE teacher from the same "
                                   "noise (GITS, Chen et al. 2024; OSS, Pei et al. 2025). Writes tuned_grids.json "
                                   "and a report to --out; --install adds the grids to the model's folder, where "
                                   "`--spacing tuned` finds them.")
    p.add_argument("--model", required=True, help="checkpoint folder, run folder, or a built-in model name")
    p.add_argument("--steps", default=DEFAULT_STEPS, help=f"step counts to tune (default {DEFAULT_STEPS})")
    p.add_argument("--sampler", default=DEFAULT_SAMPLER, help=f"the sampler to tune (default {DEFAULT_SAMPLER!r})")
    p.add_argument("--prompt", action="append", metavar="PROMPT",
                   help="a class name; repeat for several (default: all classes, round-robin)")
    p.add_argument("--seeds", type=types.positive_int, default=32, help="calibration images (default 32)")
    p.add_argument("--seed", type=types.non_negative_int, default=CALIBRATION_SEED,
                   help=f"calibration image i uses seed + i (default {CALIBRATION_SEED})")
    p.add_argument("--eval-seeds", type=types.non_negative_int, default=64,
                   help="evaluation images, disjoint from the calibration ones (default 64; 0 = no evaluation)")
    p.add_argument("--eval-seed", type=types.non_negative_int, default=0,
                   help="evaluation image i uses eval-seed + i (default 0, as `sample` and `sweep`)")
    p.add_argument("--teacher", default=DEFAULT_SAMPLER, help=f"deterministic teacher (default {DEFAULT_SAMPLER!r})")
    p.add_argument("--fine-steps", type=types.positive_int, default=100,
                   help="the teacher's steps on the model's default grid: the candidate sigmas (default 100)")
    p.add_argument("--reference-steps", type=types.positive_int, default=200,
                   help="steps of the evaluation reference (the teacher on the default grid; default 200)")
    p.add_argument("--refine-rounds", type=types.non_negative_int, default=1,
                   help="rounds of coordinate descent on the final error after the search (default 1; 0 = none)")
    p.add_argument("--learn-iterations", type=types.non_negative_int, default=0,
                   help="then learn the step times by gradient descent on the final error (LD3, Tong et al. 2025): "
                        "iterations of Adam per step count (default 0 = none; each costs steps x 3 network calls "
                        "on --learn-batch images)")
    p.add_argument("--learn-rate", type=types.learning_rate, default=0.02,
                   help="Adam's learning rate on the step times' log-sigma shares (default 0.02)")
    p.add_argument("--learn-batch", type=types.batch_size, default=32,
                   help="calibration images per learning iteration (default 32)")
    p.add_argument("--guidance", type=types.non_negative_float, default=DEFAULT_GUIDANCE,
                   help=f"classifier-free guidance during tuning and evaluation (default {DEFAULT_GUIDANCE:g})")
    p.add_argument("--guidance-interval", type=types.interval, metavar="LO,HI")
    p.add_argument("--batch-size", type=types.positive_int, default=256, help="images per network call")
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


def prompt_conditions(model, prompts: tuple[str, ...]):
    """n -> the conditions of n calibration images, round-robin over ``prompts`` ("all": every class, or every
    trained name of a text model); None for an unconditional model."""
    from diffuscope.checks.errors import UsageError
    from diffuscope.sweep import prompt_labels

    conditioner = model.conditioner
    if conditioner.kind == "none":
        if prompts != ("all",):
            conditioner.check(prompts[0])  # refuses a prompt in one line
        return lambda n: None
    if conditioner.kind == "class":
        return lambda n: conditioner.labels(prompt_labels(prompts, model.class_names, n)[0])
    names = list(model.trained_prompts()) if prompts == ("all",) else [conditioner.check(p) for p in prompts]
    if not names:
        raise UsageError(f"give --prompt ({conditioner.describe()}): this model has no trained names for 'all'")
    return lambda n: conditioner.encode([names[i % len(names)] for i in range(n)])


def run(args: argparse.Namespace) -> int:
    import json
    import shlex
    import time
    from pathlib import Path

    import torch

    from diffuscope.checks.errors import UsageError
    from diffuscope.core.guidance import CFGDenoiser, check_interval
    from diffuscope.core.schedules import make_grid
    from diffuscope.grids import store as tuned_grids
    from diffuscope.grids import tuning
    from diffuscope.io.checkpoint import record_in_manifest, write_json_atomic
    from diffuscope.io.device import pick_device
    from diffuscope.models.load import load_model
    from diffuscope.samplers import get_sampler, make_generators, randn
    from diffuscope.sweep import parse_steps

    spec, teacher = get_sampler(args.sampler), get_sampler(args.teacher)
    tuning.stepper(spec.name)
    if args.learn_iterations:
        tuning.differentiable_stepper(spec.name)
    steps = parse_steps(args.steps)
    cal = range(args.seed, args.seed + args.seeds)
    ev = range(args.eval_seed, args.eval_seed + args.eval_seeds)
    if args.eval_seeds and max(cal.start, ev.start) < min(cal.stop, ev.stop):
        raise UsageError(f"calibration seeds {cal.start}..{cal.stop - 1} and evaluation seeds {ev.start}.."
                         f"{ev.stop - 1} overlap: they must be disjoint")
    if args.replace and not (args.install and args.eval_seeds):
        raise UsageError("--replace needs --install and --eval-seeds > 0 (it replaces a grid only when the "
                         "evaluation measures the new one better)")
    if max(steps) > args.fine_steps:
        raise UsageError(f"--fine-steps {args.fine_steps} must be >= the largest step count {max(steps)}")
    out = Path(args.out)
    if (out / tuned_grids.TUNED_FILE).exists():
        raise UsageError(f"{out / tuned_grids.TUNED_FILE} exists: choose a new --out (nothing is overwritten)")
    device = pick_device(args.device)
    model = load_model(args.model, device=device, dtype=args.dtype)
    shape = tuple(model.sample_shape)  # a latent model is tuned on its latents, the state the sampler integrates
    schedule = model.denoiser.schedule
    conditioner = model.conditioner
    denoiser = model.denoiser
    interval = check_interval(args.guidance_interval) if args.guidance != 1 else None
    if args.guidance != 1:
        if not conditioner.has_null:
            raise UsageError("this model has no empty prompt (null condition): --guidance must be 1")
        denoiser = CFGDenoiser(denoiser, args.guidance, conditioner.null(1), interval)
    prompts = tuple(args.prompt or ("all",))
    conditions = prompt_conditions(model, prompts)

    def batch(seeds: range):
        noise = randn((len(seeds), *shape), make_generators(seeds.start, len(seeds))).to(device)
        cond = conditions(len(seeds))
        return noise, None if cond is None else cond.to(device)

    def decode(samples):  # errors are measured on images: a latent model's decoded pixels
        if not model.is_latent:
            return samples
        with torch.inference_mode():
            return torch.cat([model.decode(b.to(device)).cpu() for b in samples.split(args.batch_size)])

    fine = make_grid(schedule, args.fine_steps)
    noise, cond = batch(cal)
    t0 = time.perf_counter()
    states = tuning.teacher_states(denoiser, noise, fine.sigmas, cond=cond, teacher=teacher.name,
                                   batch_size=args.batch_size)
    t_teacher = time.perf_counter() - t0
    found = tuning.search_grids(denoiser, noise, fine.sigmas, steps, sampler=spec.name, cond=cond,
                                states=states, batch_size=args.batch_size,
                                progress=lambda k, n: print(f"level {k}/{n}, {time.perf_counter() - t0:.0f} s",
                                                            flush=True))
    if args.refine_rounds:
        found = {k: tuning.refine_grid(denoiser, noise, fine.sigmas, g, states[-1].to(device), sampler=spec.name,
                                       cond=cond, rounds=args.refine_rounds) for k, g in found.items()}
    if args.learn_iterations:
        if isinstance(model.denoiser, torch.nn.Module):
            model.denoiser.requires_grad_(False)  # gradients reach the step times only, not the weights
        sigma_min = float(fine.sigmas[-2])

        def report(k: int, it: int, loss: float) -> None:
            if it % 10 == 0 or it == args.learn_iterations:
                print(f"{k} steps: learning {it}/{args.learn_iterations}, batch MSE {loss:.3g}", flush=True)

        learned = {}
        for k, g in sorted(found.items()):
            learned[k] = tuning.learn_grid(
                denoiser, noise, g, states[-1].to(device), sampler=spec.name, sigma_min=sigma_min, cond=cond,
                iterations=args.learn_iterations, learning_rate=args.learn_rate, batch_size=args.learn_batch,
                progress=lambda it, loss, k=k: report(k, it, loss))
            kept = "learned" if learned[k] is not g else "kept the search's grid (learning did not lower it)"
            print(f"{k} steps: calibration MSE {g.calibration_mse:.3g} -> {learned[k].calibration_mse:.3g}, {kept} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        found = learned
    # stored (and evaluated) as a PNG records them: rounded to 6 decimals (tuned_grids.py)
    found = {k: tuning.TunedGrid(k, tuned_grids.round_sigmas(g.sigmas), g.calibration_mse) for k, g in found.items()}
    t_search = time.perf_counter() - t0 - t_teacher
    rows = []
    evaluation = None
    if args.eval_seeds:
        t1 = time.perf_counter()
        e_noise, e_cond = batch(ev)
        ref = decode(tuning.solve(denoiser, e_noise, make_grid(schedule, args.reference_steps).sigmas,
                                  sampler=teacher.name, cond=e_cond, batch_size=args.batch_size))
        installed = tuned_grids.tuned_table(model.path, spec.name) if args.replace else {}
        for k, g in sorted(found.items()):
            default = make_grid(schedule, k)
            errs = {}
            candidates = [(default.spacing, default.sigmas), ("tuned", torch.tensor(g.sigmas))]
            if k in installed:
                candidates.append(("installed", torch.tensor(installed[k])))
            for name, sigmas in candidates:
                images = tuning.solve(denoiser, e_noise, sigmas.to(torch.float64), sampler=spec.name, cond=e_cond,
                                      batch_size=args.batch_size)
                errs[name] = float(tuning.rmse_per_image(decode(images), ref).mean()) * 127.5
            rows.append({"steps": k, f"rmse_{default.spacing}": errs[default.spacing], "rmse_tuned": errs["tuned"],
                         "change": errs["tuned"] / errs[default.spacing] - 1,
                         **({"rmse_installed": errs["installed"]} if "installed" in errs else {})})
        evaluation = {"seeds": [ev.start, ev.stop - 1], "reference": f"{teacher.name} {args.reference_steps} steps",
                      "rmse_unit": "grey levels (mean over images of the per-image RMSE, x 127.5)", "rows": rows,
                      "wall_s": round(time.perf_counter() - t1, 1)}
    record = {"sampler": spec.name, "teacher": f"{teacher.name} {args.fine_steps} steps ({fine.spacing})",
              "refine_rounds": args.refine_rounds, "learn_iterations": args.learn_iterations,
              **({"learn_rate": args.learn_rate, "learn_batch": args.learn_batch} if args.learn_iterations else {}),
              "guidance": args.guidance, "guidance_interval": None if interval is None else list(interval),
              "prompts": list(prompts), "calibration_seeds": [cal.start, cal.stop - 1],
              "calibration_mse": {str(k): g.calibration_mse for k, g in sorted(found.items())},
              "wall_s": {"teacher": round(t_teacher, 1), "search": round(t_search, 1)},
              "threads": torch.get_num_threads(), "device": str(device), "evaluation": evaluation,
              "model": str(args.model), "model_step": model.step,
              "command": "diffuscope " + shlex.join(str(a) for a in args.argv)}
    doc = tuned_grids.empty()
    doc["grids"][spec.id] = {str(k): g.sigmas for k, g in sorted(found.items())}
    doc["tuning"][spec.id] = [record]
    tuned_grids.check_tuned(doc)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / tuned_grids.TUNED_FILE, doc)
    print(f"tuned {spec.name} against {record['teacher']} on {args.seeds} calibration images: teacher "
          f"{t_teacher:.1f} s, search {t_search:.1f} s")
    for k, g in sorted(found.items()):
        row = next((r for r in rows if r["steps"] == k), None)
        ev_text = "" if row is None else (f"; RMSE to the reference {row[f'rmse_{make_grid(schedule, k).spacing}']:.2f}"
                                          f" -> {row['rmse_tuned']:.2f} grey levels ({row['change']:+.0%})")
        print(f"{k} steps: {', '.join(f'{s:.4g}' for s in g.sigmas)}{ev_text}")
    if args.install:
        target = Path(model.path) / tuned_grids.TUNED_FILE
        worse = [r["steps"] for r in rows if r["change"] >= 0]  # the evaluation seeds say the default grid is better
        for k in worse:
            row = next(r for r in rows if r["steps"] == k)
            print(f"not installed: {k} steps (the tuned grid is {row['change']:+.0%} against the default grid on the "
                  f"evaluation seeds)")
        for row in rows:  # --replace: the installed grid stays unless the new one beats it too
            if "rmse_installed" in row and row["steps"] not in worse and row["rmse_tuned"] >= row["rmse_installed"]:
                worse.append(row["steps"])
                print(f"not installed: {row['steps']} steps (the installed grid is as good or better: "
                      f"{row['rmse_installed']:.2f} against {row['rmse_tuned']:.2f} grey levels)")
        kept = {s: g for s, g in doc["grids"][spec.id].items() if int(s) not in worse}
        if kept:
            install = {**doc, "grids": {spec.id: kept}}
            merged = tuned_grids.merge_tuned(tuned_grids.load_tuned(model.path), install,
                                             replace=kept if args.replace else ())
            write_json_atomic(target, merged)
            record_in_manifest(model.path, tuned_grids.TUNED_FILE)  # else the checkpoint no longer verifies
            print(f"installed: {', '.join(sorted(kept, key=int))} steps in {target}")
        else:
            print(f"nothing installed: {target} is unchanged")
    print(out / tuned_grids.TUNED_FILE)
    print(json.dumps(evaluation) if evaluation else "no evaluation (--eval-seeds 0)")
    return 0

"""``diffuscope phases``: measure what early, middle and late sampler steps decide (see ``diffuscope.phases``)."""

from __future__ import annotations

import argparse

from diffuscope.cli import args as types

DEFAULT_SAMPLER = "DPM++ 2M"
DEFAULT_GUIDANCE = 2.0  # as `diffuscope sample` (with --prompt)


def add_parser(sub) -> None:
    p = sub.add_parser("phases", help="measure coarse-vs-fine change, commitment and step consistency",
                       description="Measure the claim 'early steps decide composition, late steps fine detail' on "
                                   "a model. Writes DIR/frequency.png, commitment.png, commitment_samples.png, "
                                   "consistency.png, consistency_samples.png, phases.json and summary.md "
                                   "(also printed).")
    p.add_argument("--model", required=True, help="checkpoint folder or run folder")
    p.add_argument("--prompt", help="a class name, e.g. 7; omit to sample unconditionally (the null prompt), "
                                    "where the class itself is still to be decided")
    p.add_argument("--steps", type=types.positive_int, default=50, help="sampler steps (default 50)")
    p.add_argument("--n", type=int, default=64, help="images for the frequency split and consistency, and "
                                                     "finishes per commitment point (>= 2, default 64)")
    p.add_argument("--seed", type=types.non_negative_int, default=0, help="image i uses seed + i (default 0)")
    p.add_argument("--sampler", default=DEFAULT_SAMPLER, help=f"deterministic sampler (default {DEFAULT_SAMPLER!r})")
    p.add_argument("--finish-sampler", default="DDPM", help="stochastic sampler finishing the restarts "
                                                            "(default DDPM)")
    p.add_argument("--points", type=types.positive_int, default=10, help="commitment points (default 10)")
    p.add_argument("--cutoff", type=float, default=0.125, help="coarse/fine split, cycles per pixel "
                                                               "(default 0.125: a period of 8 pixels)")
    p.add_argument("--consistency-steps", default="10,25,50,100", help="step counts compared (default "
                                                                        "10,25,50,100)")
    p.add_argument("--guidance", type=types.non_negative_float,
                   help=f"classifier-free guidance with --prompt, 1 = off (default {DEFAULT_GUIDANCE:g})")
    p.add_argument("--classifier", metavar="PATH", help="classifier for 'same class' (default: the one "
                                                        "diffuscope.metrics finds for the model, else pixels only)")
    p.add_argument("--batch-size", type=types.positive_int, default=64)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.set_defaults(run=run)


def parse_steps_list(text: str) -> list[int]:
    from diffuscope.errors import UsageError

    try:
        steps = [int(p) for p in str(text).split(",")]
    except ValueError:
        raise UsageError(f"malformed step list {text!r}: expected comma-separated integers like 10,25,50,100") from None
    if len(steps) < 2 or min(steps) < 1 or len(set(steps)) != len(steps):
        raise UsageError(f"--consistency-steps needs at least 2 different positive step counts, got {text!r}")
    return sorted(steps)


def run(args: argparse.Namespace) -> int:
    import torch

    from diffuscope.checkpoint import load_model
    from diffuscope.data import class_index
    from diffuscope.errors import UsageError
    from diffuscope.guidance import CFGDenoiser
    from diffuscope.phases import commitment_curve, frequency_split, sample_trajectory, step_consistency
    from diffuscope.processes import find_classify, save_phases
    from diffuscope.samplers import get_sampler, make_generators, randn
    from diffuscope.schedules import make_grid
    from diffuscope.training.loop import pick_device

    if args.n < 2:
        raise UsageError(f"--n must be at least 2, got {args.n}")
    if args.steps < 2:
        raise UsageError(f"--steps must be at least 2, got {args.steps}")
    if not get_sampler(args.sampler).deterministic:
        raise UsageError(f"--sampler must be deterministic; {get_sampler(args.sampler).name} is stochastic")
    if get_sampler(args.finish_sampler).deterministic:
        raise UsageError(f"--finish-sampler must be stochastic; {get_sampler(args.finish_sampler).name} is not")
    if not 0 < args.cutoff < 0.5**0.5:
        raise UsageError(f"--cutoff must be in (0, 0.707) cycles per pixel, got {args.cutoff}")
    if args.points < 2:
        raise UsageError(f"--points must be at least 2 (the first and the last step), got {args.points}")
    consistency_steps = parse_steps_list(args.consistency_steps)
    device = pick_device(args.device)
    model = load_model(args.model, device=device)
    u = model.config.unet
    denoiser, notes = model.denoiser, []
    if args.prompt is not None:
        if u.num_classes == 0:
            raise UsageError("this model has no classes: leave out --prompt")
        label = class_index(args.prompt, model.class_names)
        guidance = DEFAULT_GUIDANCE if args.guidance is None else args.guidance
        if guidance != 1:
            denoiser = CFGDenoiser(denoiser, guidance, u.num_classes)
        notes.append(f"prompt {args.prompt!r}, guidance {guidance:g}: the prompt fixes the class, so class "
                     "agreement is expected to be high throughout; the pixel distance shows when the particular "
                     "image is decided")
    else:
        if args.guidance is not None:
            raise UsageError("--guidance needs --prompt (without one, sampling is unconditional)")
        label = u.num_classes  # the null prompt (0 for a model without classes: ignored by the net)
        notes.append("no prompt: unconditional sampling, so the class itself is decided along the way")
    classify, note = find_classify(model.path, args.classifier, model.class_names)
    notes.append(note)
    notes.append(f"model {model.path} (step {model.step}); {args.steps} steps of {get_sampler(args.sampler).name}; "
                 f"images use seeds {args.seed}..{args.seed + args.n - 1}; the commitment restarts image 0")
    schedule = model.denoiser.schedule
    grid = make_grid(schedule, args.steps)
    shape = (args.n, u.in_channels, u.image_size, u.image_size)
    noise = randn(shape, make_generators(args.seed, args.n), device)
    cond = torch.full((args.n,), label, dtype=torch.long, device=device)
    sigmas = grid.sigmas.to(device)
    traj = sample_trajectory(denoiser, noise * float(sigmas[0]), sigmas, sampler=args.sampler, cond=cond)
    freq = frequency_split(traj.denoised, args.cutoff, grid.sigmas.tolist())
    commit = commitment_curve(denoiser, sigmas, noise[:1] * float(sigmas[0]), cond=cond[:1],
                              finish_sampler=args.finish_sampler, points=args.points, n=args.n, seed=args.seed,
                              classify=classify, batch_size=args.batch_size, trajectory=traj.select(slice(0, 1)))
    consist = step_consistency(denoiser, schedule, noise, cond=cond, steps=consistency_steps, sampler=args.sampler,
                               classify=classify, batch_size=args.batch_size)
    paths, summary = save_phases(args.out, freq=freq, commit=commit, consist=consist, notes=notes)
    print(summary)
    for path in paths:
        print(path)
    return 0

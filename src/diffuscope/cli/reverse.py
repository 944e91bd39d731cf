"""``diffuscope reverse``: the reverse (generation) process of one image, step by step."""

from __future__ import annotations

import argparse

from diffuscope.cli import args as types
from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER  # guidance: 1 (off) for an unconditional model

REVERSE_STEPS = 50  # the strip's default step count (a distilled student: its own K, models/student.py)


def add_parser(sub) -> None:
    p = sub.add_parser("reverse", help="picture and GIF of the reverse (generation) process",
                       description="Generate one image and show it step by step. Writes DIR/reverse.png (row 1: the "
                                   "noisy state x_t in VP scale, row 2: the predicted clean image, at --show evenly "
                                   "spaced steps, first and last included), DIR/reverse.gif (every step, at most 250 "
                                   "evenly spaced ones; both side by side, then the final image) and DIR/reverse.json.")
    p.add_argument("--model", required=True, type=types.name, help="checkpoint folder or run folder")
    p.add_argument("--prompt", type=types.prompt,
                   help="a class name (e.g. 7 or seven) or text; leave out for an unconditional model")
    p.add_argument("--steps", type=types.steps,
                   help=f"sampler steps (default {REVERSE_STEPS}; a distilled student's: its K)")
    p.add_argument("--show", type=types.int_range(-2**31, 2**31, "int"),
                   help="panels in the strip, 2..steps (default 8, or the steps when fewer)")
    p.add_argument("--seed", type=types.seed, default=0, help="-1 = random (reported); default 0")
    p.add_argument("--sampler", type=types.name,
                   help=f"sampler name or id (default {DEFAULT_SAMPLER!r}; a distilled student's: Euler, its own "
                        "grid)")
    p.add_argument("--spacing", type=types.name,
                   help="sigma grid: trailing|leading|linspace (discrete models), karras, logsnr, "
                        "tuned (`diffuscope tune-steps`)")
    p.add_argument("--guidance", type=types.guidance,
                   help=f"classifier-free guidance scale, 1 = off (default {DEFAULT_GUIDANCE:g}; a student's: 1)")
    p.add_argument("--guidance-interval", type=types.interval, metavar="LO,HI",
                   help="apply guidance only where LO < sigma <= HI, as `sample` (default: everywhere)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    types.add_dtype(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from diffuscope.generation.generate import GenerationRequest
    from diffuscope.io.device import pick_device
    from diffuscope.io.outputs import prepare_out
    from diffuscope.lesson.reverse import reverse_process, save_reverse, show_indices
    from diffuscope.models.load import load_model
    from diffuscope.models.student import Sampling, resolve_sampling, student_defaults_at
    from diffuscope.samplers import get_sampler

    ours = Sampling(DEFAULT_SAMPLER, REVERSE_STEPS)
    early = resolve_sampling(student_defaults_at(args.model), sampler=args.sampler, steps=args.steps, fallback=ours)
    show = args.show if args.show is not None else min(8, early.steps)
    show_indices(early.steps, show)  # reject a bad --show before loading anything
    get_sampler(early.sampler)
    args.out = prepare_out(args.out, "reverse")
    device = pick_device(args.device)
    model = load_model(args.model, device=device, dtype=args.dtype)
    # what was given, else a distilled student's own (K steps, Euler, its grid, guidance 1), else ours
    chosen = resolve_sampling(model, sampler=args.sampler, steps=args.steps, spacing=args.spacing,
                              guidance=args.guidance, fallback=ours)
    request = GenerationRequest(prompts=(args.prompt,), sampler=chosen.sampler, steps=chosen.steps,
                                spacing=chosen.spacing, guidance=chosen.guidance,
                                guidance_interval=args.guidance_interval, seed=args.seed, device=device,
                                grid=chosen.grid(model))  # None unless tuned
    result = reverse_process(model, request)
    paths = save_reverse(result, args.out, show=show)
    sig = result.trajectory.sigmas
    interval = " on ({:g}, {:g}]".format(*result.guidance_interval) if result.guidance_interval else ""
    print(f"reverse process: prompt {result.prompt!r}, {result.sampler}, {result.steps} steps ({result.nfe} NFE), "
          f"guidance {result.guidance:g}{interval}, seed {result.seed}")
    print(f"sigmas: {', '.join(f'{float(s):.4g}' for s in sig)}")
    print(f"shown steps: {', '.join(str(i) for i in show_indices(result.steps, show))}")
    for path in paths:
        print(path)
    return 0

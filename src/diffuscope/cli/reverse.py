"""``diffuscope reverse``: the reverse (generation) process of one image, step by step."""

from __future__ import annotations

import argparse

from diffuscope.cli import args as types
from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER  # guidance: 1 (off) for an unconditional model


def add_parser(sub) -> None:
    p = sub.add_parser("reverse", help="picture and GIF of the reverse (generation) process",
                       description="Generate one image and show it step by step. Writes DIR/reverse.png (row 1: the "
                                   "noisy state x_t in VP scale, row 2: the predicted clean image, at --show evenly "
                                   "spaced steps, first and last included), DIR/reverse.gif (every step, at most 250 "
                                   "evenly spaced ones; both side by side, then the final image) and DIR/reverse.json.")
    p.add_argument("--model", required=True, type=types.name, help="checkpoint folder or run folder")
    p.add_argument("--prompt", type=types.prompt,
                   help="a class name (e.g. 7 or seven) or text; leave out for an unconditional model")
    p.add_argument("--steps", type=types.steps, default=50, help="sampler steps (default 50)")
    p.add_argument("--show", type=types.int_range(-2**31, 2**31, "int"), default=8,
                   help="panels in the strip, 2..steps (default 8)")
    p.add_argument("--seed", type=types.seed, default=0, help="-1 = random (reported); default 0")
    p.add_argument("--sampler", default=DEFAULT_SAMPLER, type=types.name,
                   help=f"sampler name or id (default {DEFAULT_SAMPLER!r})")
    p.add_argument("--spacing", type=types.name,
                   help="sigma grid: trailing|leading|linspace (discrete models), karras, logsnr, "
                        "tuned (`diffuscope tune-steps`)")
    p.add_argument("--guidance", type=types.guidance,
                   help=f"classifier-free guidance scale, 1 = off (default {DEFAULT_GUIDANCE:g})")
    p.add_argument("--guidance-interval", type=types.interval, metavar="LO,HI",
                   help="apply guidance only where LO < sigma <= HI, as `sample` (default: everywhere)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    types.add_dtype(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from diffuscope.generation.generate import GenerationRequest
    from diffuscope.grids.store import grid_for_sample
    from diffuscope.io.device import pick_device
    from diffuscope.io.outputs import prepare_out
    from diffuscope.lesson.reverse import reverse_process, save_reverse, show_indices
    from diffuscope.models.load import load_model
    from diffuscope.models.student import student_defaults
    from diffuscope.samplers import get_sampler

    show_indices(args.steps, args.show)  # reject a bad --show before loading anything
    get_sampler(args.sampler)
    args.out = prepare_out(args.out, "reverse")
    device = pick_device(args.device)
    model = load_model(args.model, device=device, dtype=args.dtype)
    student = student_defaults(model)  # a distilled student learned the guided solution: guidance 1
    guidance = args.guidance if args.guidance is not None else (
        student.guidance if student else DEFAULT_GUIDANCE if model.conditioner.has_null else 1.0)
    request = GenerationRequest(prompts=(args.prompt,), sampler=args.sampler, steps=args.steps,
                                spacing=args.spacing, guidance=guidance, guidance_interval=args.guidance_interval,
                                seed=args.seed, device=device,
                                grid=grid_for_sample(model.path, args.sampler, args.steps, args.spacing))  # tuned only
    result = reverse_process(model, request)
    paths = save_reverse(result, args.out, show=args.show)
    sig = result.trajectory.sigmas
    interval = " on ({:g}, {:g}]".format(*result.guidance_interval) if result.guidance_interval else ""
    print(f"reverse process: prompt {result.prompt!r}, {result.sampler}, {result.steps} steps ({result.nfe} NFE), "
          f"guidance {result.guidance:g}{interval}, seed {result.seed}")
    print(f"sigmas: {', '.join(f'{float(s):.4g}' for s in sig)}")
    print(f"shown steps: {', '.join(str(i) for i in show_indices(result.steps, args.show))}")
    for path in paths:
        print(path)
    return 0

"""``diffuscope reverse``: the reverse (generation) process of one image, step by step."""

from __future__ import annotations

import argparse

from diffuscope.cli import args as types
from diffuscope.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER  # guidance: 1 (off) for a model without classes


def add_parser(sub) -> None:
    p = sub.add_parser("reverse", help="picture and GIF of the reverse (generation) process",
                       description="Generate one image and show it step by step. Writes DIR/reverse.png (row 1: the "
                                   "noisy state x_t in VP scale, row 2: the predicted clean image, at --show evenly "
                                   "spaced steps, first and last included), DIR/reverse.gif (every step, both side "
                                   "by side, then the final image) and DIR/reverse.json.")
    p.add_argument("--model", required=True, help="checkpoint folder or run folder")
    p.add_argument("--prompt", help="a class name, e.g. 7 or seven (required for a class-conditional model)")
    p.add_argument("--steps", type=types.positive_int, default=50, help="sampler steps (default 50)")
    p.add_argument("--show", type=int, default=8, help="panels in the strip, 2..steps (default 8)")
    p.add_argument("--seed", type=types.seed, default=0, help="-1 = random (reported); default 0")
    p.add_argument("--sampler", default=DEFAULT_SAMPLER, help=f"sampler name or id (default {DEFAULT_SAMPLER!r})")
    p.add_argument("--spacing", help="sigma grid: trailing|leading|linspace (discrete models), karras, logsnr, "
                                     "tuned (`diffuscope tune-steps`)")
    p.add_argument("--guidance", type=types.non_negative_float,
                   help=f"classifier-free guidance scale, 1 = off (default {DEFAULT_GUIDANCE:g})")
    p.add_argument("--guidance-interval", type=types.interval, metavar="LO,HI",
                   help="apply guidance only where LO < sigma <= HI, as `sample` (default: everywhere)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.set_defaults(run=run)


def resolve_prompt(model, prompt: str | None) -> tuple[int, str, int | None]:
    """(label, prompt, null label) for a loaded model; an unknown or missing prompt raises UsageError."""
    from diffuscope.data import class_index
    from diffuscope.errors import UsageError

    k = model.config.unet.num_classes
    if k == 0:
        if prompt:
            raise UsageError("this model has no classes: leave out --prompt")
        return 0, "", None
    if prompt is None:
        raise UsageError(f"--prompt is required for this model (valid: {', '.join(model.class_names)})")
    return class_index(prompt, model.class_names), prompt, k


def run(args: argparse.Namespace) -> int:
    from diffuscope.checkpoint import load_model
    from diffuscope.device import pick_device
    from diffuscope.processes import reverse_process, save_reverse, show_indices
    from diffuscope.samplers import get_sampler
    from diffuscope.tuned_grids import grid_for_sample

    show_indices(args.steps, args.show)  # reject a bad --show before loading anything
    get_sampler(args.sampler)
    device = pick_device(args.device)
    model = load_model(args.model, device=device)
    label, prompt, null = resolve_prompt(model, args.prompt)
    guidance = args.guidance if args.guidance is not None else (DEFAULT_GUIDANCE if null is not None else 1.0)
    u = model.config.unet
    result = reverse_process(model.denoiser, model.denoiser.schedule, label, (u.in_channels, u.image_size,
                             u.image_size), steps=args.steps, sampler=args.sampler, guidance=guidance,
                             seed=args.seed, null_label=null, spacing=args.spacing, prompt=prompt, device=device,
                             guidance_interval=args.guidance_interval,
                             grid=grid_for_sample(model.path, args.sampler, args.steps, args.spacing))  # tuned only
    paths = save_reverse(result, args.out, show=args.show)
    sig = result.trajectory.sigmas
    interval = " on ({:g}, {:g}]".format(*result.guidance_interval) if result.guidance_interval else ""
    print(f"reverse process: prompt {prompt!r}, {result.sampler}, {result.steps} steps ({result.nfe} NFE), "
          f"guidance {result.guidance:g}{interval}, seed {result.seed}")
    print(f"sigmas: {', '.join(f'{float(s):.4g}' for s in sig)}")
    print(f"shown steps: {', '.join(str(i) for i in show_indices(result.steps, args.show))}")
    for path in paths:
        print(path)
    return 0

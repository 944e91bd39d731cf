"""``diffuscope sample``: generate images for a prompt; each PNG carries its parameters."""

from __future__ import annotations

import argparse

from diffuscope.cli import args as types
from diffuscope.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="generate images for a prompt with any sampler and step count",
                       description="Generate images. Each PNG carries AUTOMATIC1111-style 'parameters' text and "
                                   "the full parameters as JSON (see `diffuscope info`).")
    p.add_argument("--model", help="checkpoint folder, run folder, or a built-in model name (mnist)")
    p.add_argument("--prompt", help="a class name, e.g. 7 or seven")
    p.add_argument("--sampler", help=f"sampler display name or id (default {DEFAULT_SAMPLER!r}); "
                                     "see `diffuscope samplers`")
    p.add_argument("--steps", type=types.positive_int, help=f"sampler steps (default {DEFAULT_STEPS})")
    p.add_argument("--spacing", help="sigma grid: trailing|leading|linspace (discrete models), karras, logsnr, "
                                     "tuned (the model's grid for the sampler, from `diffuscope tune-steps`)")
    p.add_argument("--seed", type=types.seed, help="-1 = random (reported); image i uses seed + i (default 0)")
    p.add_argument("--n", type=types.positive_int, default=None, help="number of images (default 16)")
    p.add_argument("--guidance", type=types.non_negative_float,
                   help=f"classifier-free guidance scale, 1 = off (default {DEFAULT_GUIDANCE:g})")
    p.add_argument("--guidance-interval", type=types.interval, metavar="LO,HI",
                   help="apply guidance only where LO < sigma <= HI (Kynkaanniemi et al. 2024; EDM2 uses 0.28,5.42); "
                        "plain conditional sampling elsewhere (default: everywhere)")
    p.add_argument("--batch-size", type=types.positive_int, default=64)
    p.add_argument("--from", dest="from_image", metavar="IMAGE.png",
                   help="take every parameter from a PNG written by diffuscope (flags still override)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from diffuscope.checkpoint import load_model
    from diffuscope.data import class_index
    from diffuscope.device import pick_device
    from diffuscope.errors import UsageError
    from diffuscope.generate import generate, image_params, write_images
    from diffuscope.pngmeta import read_png_params
    from diffuscope.tuned_grids import grid_for_sample

    base = {}
    if args.from_image:
        _, base = read_png_params(args.from_image)
        if not base:
            raise UsageError(f"{args.from_image} has no diffuscope parameters (was it written by diffuscope?)")
    model_ref = args.model or base.get("model_path")
    prompt = args.prompt or base.get("prompt")
    if not model_ref or prompt is None:
        raise UsageError("--model and --prompt are required (or --from IMAGE.png)")
    device = pick_device(args.device)
    model = load_model(model_ref, device=device)
    label = class_index(prompt, model.class_names)
    n = args.n or (1 if args.from_image else 16)
    u = model.config.unet
    shape = (u.in_channels, u.image_size, u.image_size)
    sampler = args.sampler or base.get("sampler", DEFAULT_SAMPLER)
    steps, spacing = args.steps or base.get("steps", DEFAULT_STEPS), args.spacing or base.get("spacing")
    grid = grid_for_sample(model.path, sampler, steps, spacing, base)  # None unless --spacing tuned
    gen = generate(model.denoiser, model.denoiser.schedule, [label] * n, shape,
                   sampler=sampler, steps=steps, spacing=spacing, grid=grid,
                   guidance=args.guidance if args.guidance is not None else base.get("guidance", DEFAULT_GUIDANCE),
                   guidance_interval=(args.guidance_interval if args.guidance_interval is not None
                                      else base.get("guidance_interval")),
                   seed=args.seed if args.seed is not None else base.get("seed", 0),
                   null_label=u.num_classes, batch_size=args.batch_size, device=device)
    name = model.run_config.get("model_name") or str(model_ref)
    params = [image_params(gen, i, prompt=prompt, model_name=name, model_path=str(model_ref), shape=shape)
              for i in range(n)]
    paths = write_images(gen, args.out, params, grid_scale=max(1, 64 // u.image_size))
    interval = "" if gen.guidance_interval is None else " on ({:g}, {:g}]".format(*gen.guidance_interval)
    print(f"{n} image(s), prompt {prompt!r}, {gen.sampler}, {gen.grid.steps} steps ({gen.nfe} NFE), "
          f"guidance {gen.guidance:g}{interval}, seed {gen.seed}")
    print(f"sigmas: {', '.join(f'{s:.4g}' for s in gen.grid.sigmas.tolist())}")
    for p in paths:
        print(p)
    return 0

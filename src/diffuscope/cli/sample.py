"""``diffuscope sample``: generate images for a prompt; each PNG carries its parameters."""

from __future__ import annotations

import argparse

from diffuscope.cli import args as types
from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS  # a student's: its own


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="generate images for a prompt with any sampler and step count",
                       description="Generate images. Each PNG carries AUTOMATIC1111-style 'parameters' text and "
                                   "the full parameters as JSON (see `diffuscope info`).")
    p.add_argument("--model", type=types.name, help="checkpoint folder, run folder, or a built-in model name (mnist)")
    p.add_argument("--prompt", type=types.prompt, help="a class name (e.g. 7 or seven), or text for a text model; "
                                                     "leave out for an unconditional model")
    p.add_argument("--sampler", type=types.name, help=f"sampler display name or id (default {DEFAULT_SAMPLER!r}); "
                                     "see `diffuscope samplers`")
    p.add_argument("--steps", type=types.steps, help=f"sampler steps (default {DEFAULT_STEPS})")
    p.add_argument("--spacing", type=types.name,
                   help="sigma grid: trailing|leading|linspace (discrete models), karras, logsnr, "
                        "tuned (the model's grid for the sampler, from `diffuscope tune-steps`)")
    p.add_argument("--seed", type=types.seed, help="-1 = random (reported); image i uses seed + i (default 0)")
    p.add_argument("--n", type=types.count, default=None, help="number of images (default 16)")
    p.add_argument("--guidance", type=types.guidance,
                   help=f"classifier-free guidance scale, 1 = off (default {DEFAULT_GUIDANCE:g})")
    p.add_argument("--guidance-interval", type=types.interval, metavar="LO,HI",
                   help="apply guidance only where LO < sigma <= HI (Kynkaanniemi et al. 2024; EDM2 uses 0.28,5.42); "
                        "plain conditional sampling elsewhere (default: everywhere)")
    p.add_argument("--batch-size", type=types.batch_size, default=64)
    p.add_argument("--from", dest="from_image", metavar="IMAGE.png",
                   help="take every parameter from a PNG written by diffuscope (flags still override)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    types.add_dtype(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from diffuscope.checks.errors import UsageError
    from diffuscope.generation.generate import GenerationRequest, generate, image_params, write_images
    from diffuscope.io.device import pick_device
    from diffuscope.io.outputs import next_image_number, prepare_out
    from diffuscope.io.pngmeta import read_png_params
    from diffuscope.models.load import load_model
    from diffuscope.models.student import resolve_sampling

    args.out = prepare_out(args.out, "sample")  # the --out rule (outputs.py): new, empty or our earlier images
    start = next_image_number(args.out)  # 1 + the largest number there, fixed before sampling: never a collision
    base = {}
    if args.from_image:
        _, base = read_png_params(args.from_image)
        if not base:
            raise UsageError(f"{args.from_image} has no diffuscope parameters (was it written by diffuscope?)")
    model_ref = args.model or base.get("model_path")
    if not model_ref:
        raise UsageError("--model is required (or --from IMAGE.png)")
    device = pick_device(args.device)
    model = load_model(model_ref, device=device, dtype=args.dtype)
    prompt = args.prompt if args.prompt is not None else (base.get("prompt") or None)
    if model.conditioner.check(prompt) is None:  # the model's own rule: a class name, any text, or no prompt
        prompt = None
    n = args.n or (1 if args.from_image else 16)
    # what was given (flags, then the PNG's), else a distilled student's own (models/student.py), else ours
    chosen = resolve_sampling(model, sampler=args.sampler if args.sampler is not None else base.get("sampler"),
                              steps=args.steps or base.get("steps"), spacing=args.spacing or base.get("spacing"),
                              guidance=args.guidance if args.guidance is not None else base.get("guidance"))
    request = GenerationRequest(
        prompts=None if prompt is None else (prompt,), n=n, sampler=chosen.sampler, steps=chosen.steps,
        spacing=chosen.spacing, grid=chosen.grid(model, base), guidance=chosen.guidance,  # grid: None unless tuned
        guidance_interval=(args.guidance_interval if args.guidance_interval is not None
                           else base.get("guidance_interval")),
        seed=args.seed if args.seed is not None else base.get("seed", 0),
        batch_size=args.batch_size, device=device)
    gen = generate(model, request)
    shape = model.image_shape
    params = [image_params(gen, i, prompt=prompt or "", model_name=model.name, model_path=str(model_ref),
                           shape=shape) for i in range(n)]
    paths = write_images(gen, args.out, params, grid_scale=max(1, 64 // shape[1]), start=start)
    interval = "" if gen.guidance_interval is None else " on ({:g}, {:g}]".format(*gen.guidance_interval)
    shown = "no prompt" if prompt is None else f"prompt {prompt!r}"
    print(f"{n} image(s), {shown}, {gen.sampler}, {gen.grid.steps} steps ({gen.nfe} NFE), "
          f"guidance {gen.guidance:g}{interval}, seed {gen.seed}")
    print(f"sigmas: {', '.join(f'{s:.4g}' for s in gen.grid.sigmas.tolist())}")
    for p in paths:
        print(p)
    return 0

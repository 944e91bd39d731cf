"""``diffuscope invert``: from an image back to its noise (the probability-flow ODE run upwards), then forward again
from that noise; the reconstruction error in pixels and grey levels (inversion.py)."""

from __future__ import annotations

import argparse

from diffuscope.cli import args as types
from diffuscope.core.defaults import DEFAULT_SAMPLER
from diffuscope.lesson.inversion_report import OUTPUTS

INVERT_STEPS = 50  # both ways; a distilled student inverts on its own K-step grid (models/student.py)


def add_parser(sub) -> None:
    p = sub.add_parser("invert", help="invert an image to its noise and regenerate it from there",
                       description="Runs the deterministic ODE from sigma_min up to sigma_max (DDIM inversion, or "
                                   "the sampler's higher-order steps), saves the noise (noise.safetensors, "
                                   "noise.png), regenerates from it with the same steps and reports the "
                                   "reconstruction error. Writes " + ", ".join(OUTPUTS) + " to --out.")
    p.add_argument("--model", required=True, type=types.name,
                   help="checkpoint folder, run folder, or a built-in model name")
    p.add_argument("--image", required=True, metavar="X.png", help="the image (converted to the model's channels; "
                   "resized to its size when it differs)")
    p.add_argument("--prompt", type=types.prompt,
                   help="the image's class, e.g. 3 (required for a class-conditional model)")
    p.add_argument("--regen-prompt", type=types.prompt, metavar="PROMPT",
                   help="regenerate with another class (default --prompt): the simplest edit, e.g. a 3 as an 8")
    p.add_argument("--steps", type=types.positive_int,
                   help=f"sampler steps, both ways (default {INVERT_STEPS}; a distilled student's: its K)")
    p.add_argument("--sampler", type=types.name,
                   help=f"Euler, DDIM, iPNDM, iPNDM v or DPM++ 2M (default {DEFAULT_SAMPLER!r}; a distilled "
                        "student's: Euler)")
    p.add_argument("--spacing", type=types.name,
                   help="sigma grid: karras, logsnr, tuned, ... (default: the model's; a distilled student's own "
                        "grid at its K steps)")
    p.add_argument("--guidance", type=types.guidance,
                   help="classifier-free guidance both ways (default 1 = off: guided inversion is biased and "
                        "reconstructs worse; a student's guidance is distilled into it)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    types.add_dtype(p)
    p.set_defaults(run=run)


def load_image(path: str, channels: int, size: int):
    """A PNG/JPEG as [1, C, size, size] in [-1, 1], and whether it had to be resized."""
    import numpy as np
    from PIL import UnidentifiedImageError

    from diffuscope.checks import limits
    from diffuscope.checks.errors import UsageError
    from diffuscope.data.dataset import fit_size, from_uint8

    try:  # bounded file size and pixels (checked from the header), decoder refusals (bombs) in one line
        with limits.open_image(path) as im:
            w, h = im.size
            # the float32 copies below (RGB, and the resized one): refused before they are made
            limits.check_memory(f"image {path} ({w}x{h})", limits.images_bytes(2, (3, h, w)))
            im = im.convert("RGBA").convert("RGB") if im.mode in ("P", "LA", "RGBA") else im
            arr = np.array(im.convert("L" if channels == 1 else "RGB"))  # a writable copy for torch
    except (OSError, UnidentifiedImageError) as e:
        raise UsageError(f"cannot read image {path}: {e}") from None
    x = from_uint8(arr[None] if channels == 1 else arr.transpose(2, 0, 1)[None])
    h, w = x.shape[-2:]
    if h != w:
        raise UsageError(f"{path} is {w}x{h}: the image must be square")
    return fit_size(x, size), h != size


def run(args: argparse.Namespace) -> int:
    from diffuscope.checks import limits
    from diffuscope.generation.generate import GenerationRequest
    from diffuscope.io.device import pick_device
    from diffuscope.io.outputs import prepare_out
    from diffuscope.lesson.inversion_report import invert_image, reachability, save_inversion
    from diffuscope.models.load import load_model
    from diffuscope.models.student import Sampling, resolve_sampling, student_defaults_at
    from diffuscope.samplers import get_sampler
    from diffuscope.samplers.steppers import stepper

    # what was given, else a distilled student's own (K Euler steps on the grid it was distilled on, both ways:
    # the only sigmas it learned; guidance 1), else ours (50 steps, unguided: guided inversion is biased)
    ours = Sampling(DEFAULT_SAMPLER, INVERT_STEPS, guidance=1.0)
    early = resolve_sampling(student_defaults_at(args.model), sampler=args.sampler, steps=args.steps, fallback=ours)
    stepper(get_sampler(early.sampler).name)  # one that has an upward step: refused before the model loads
    out = prepare_out(args.out, "invert")  # the --out rule of every command (outputs.py), before any work
    limits.open_image(args.image).close()  # a missing, oversized or broken image: refused before the model loads
    device = pick_device(args.device)
    model = load_model(args.model, device=device, dtype=args.dtype)
    chosen = resolve_sampling(model, sampler=args.sampler, steps=args.steps, spacing=args.spacing,
                              guidance=args.guidance, fallback=ours)
    channels, size, _ = model.image_shape
    image, resized = load_image(args.image, channels, size)
    request = GenerationRequest(prompts=(args.prompt,), sampler=chosen.sampler, steps=chosen.steps,
                                spacing=chosen.spacing, grid=chosen.grid(model), guidance=chosen.guidance,
                                device=device)
    result = invert_image(model, image, request, regen_prompt=args.regen_prompt)
    paths = save_inversion(result, out, model=str(model.path), image=str(args.image), resized=resized)
    r = result.report()
    edit = f", regenerated as {result.regen_prompt!r}" if result.regen_prompt != result.prompt else ""
    print(f"inverted {args.image} ({result.prompt!r}{edit}) with {result.sampler}, {r['steps']} steps each way "
          f"({r['nfe']} NFE), guidance {chosen.guidance:g}" + (" (resized)" if resized else ""))
    print(f"noise: mean {r['noise_mean']:+.3f}, std {r['noise_std']:.3f} (standard normal: 0, 1)")
    print(f"reconstruction: RMSE {r['rmse']:.4f} in [-1, 1] = {r['rmse_grey_levels']:.2f} grey levels, "
          f"max abs error {r['max_abs_error']:.3f}")
    print(reachability(result))
    for path in paths:
        print(path)
    return 0

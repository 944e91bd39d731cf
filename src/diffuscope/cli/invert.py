"""``diffuscope invert``: from an image back to its noise (the probability-flow ODE run upwards), then forward again
from that noise; the reconstruction error in pixels and grey levels (inversion.py)."""

from __future__ import annotations

import argparse

from diffuscope.cli import args as types
from diffuscope.defaults import DEFAULT_SAMPLER

OUTPUTS = ("original.png", "noise.safetensors", "noise.png", "regenerated.png", "side_by_side.png", "invert.json")


def add_parser(sub) -> None:
    p = sub.add_parser("invert", help="invert an image to its noise and regenerate it from there",
                       description="Runs the deterministic ODE from sigma_min up to sigma_max (DDIM inversion, or "
                                   "the sampler's higher-order steps), saves the noise (noise.safetensors, "
                                   "noise.png), regenerates from it with the same steps and reports the "
                                   "reconstruction error. Writes " + ", ".join(OUTPUTS) + " to --out.")
    p.add_argument("--model", required=True, help="checkpoint folder, run folder, or a built-in model name")
    p.add_argument("--image", required=True, metavar="X.png", help="the image (converted to the model's channels; "
                   "resized to its size when it differs)")
    p.add_argument("--prompt", help="the image's class, e.g. 3 (required for a class-conditional model)")
    p.add_argument("--regen-prompt", metavar="PROMPT",
                   help="regenerate with another class (default --prompt): the simplest edit, e.g. a 3 as an 8")
    p.add_argument("--steps", type=types.positive_int, default=50, help="sampler steps, both ways (default 50)")
    p.add_argument("--sampler", default=DEFAULT_SAMPLER,
                   help=f"Euler, DDIM, iPNDM, iPNDM v or DPM++ 2M (default {DEFAULT_SAMPLER!r})")
    p.add_argument("--spacing", help="sigma grid: karras, logsnr, tuned, ... (default: the model's)")
    p.add_argument("--guidance", type=types.non_negative_float, default=1.0,
                   help="classifier-free guidance both ways (default 1 = off: guided inversion is biased and "
                        "reconstructs worse)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    types.add_dtype(p)
    p.set_defaults(run=run)


def load_image(path: str, channels: int, size: int):
    """A PNG/JPEG as [1, C, size, size] in [-1, 1], and whether it had to be resized."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from diffuscope.data.dataset import fit_size, from_uint8
    from diffuscope.errors import UsageError

    try:
        with Image.open(path) as im:
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
    import json
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    from diffuscope.checkpoint import load_model
    from diffuscope.device import pick_device
    from diffuscope.errors import UsageError
    from diffuscope.guidance import CFGDenoiser
    from diffuscope.inversion import round_trip
    from diffuscope.samplers import get_sampler
    from diffuscope.samplers.steppers import stepper
    from diffuscope.tuned_grids import grid_for
    from diffuscope.viz import image_grid, to_pil

    spec = get_sampler(args.sampler)
    stepper(spec.name)  # one that has an upward step
    out = Path(args.out)
    taken = [n for n in OUTPUTS if (out / n).exists()]
    if taken:
        raise UsageError(f"{out} already holds {', '.join(taken)}: choose a new --out (nothing is overwritten)")
    device = pick_device(args.device)
    model = load_model(args.model, device=device, dtype=args.dtype)
    conditioner = model.conditioner  # prompts -> conditions in one place (the model's own rule)
    prompt = conditioner.check(args.prompt)
    regen_prompt = conditioner.check(args.regen_prompt) if args.regen_prompt else prompt
    if args.guidance != 1 and not conditioner.has_null:
        raise UsageError("this model has no empty prompt (null condition): guidance must be 1")
    channels, size, _ = model.image_shape
    image, resized = load_image(args.image, channels, size)
    denoiser = model.denoiser if args.guidance == 1 else CFGDenoiser(model.denoiser, args.guidance,
                                                                     conditioner.null(1))
    grid = grid_for(model.path, model.denoiser.schedule, args.steps, args.spacing, spec.name)
    cond = None if prompt is None else conditioner.encode([prompt]).to(device)
    regen_cond = None if regen_prompt is None else conditioner.encode([regen_prompt]).to(device)
    rt = round_trip(denoiser, image.to(device), grid.sigmas, sampler=spec.name, cond=cond, regen_cond=regen_cond,
                    encode=model.encode, decode=model.decode)
    out.mkdir(parents=True, exist_ok=True)
    noise, regen = rt.noise.float().cpu(), rt.images.float().cpu()
    meta = {"sampler": spec.name, "steps": str(grid.steps), "sigma_max": str(float(grid.sigmas[0])),
            "prompt": prompt, "model": str(model.path)}
    save_file({"noise": noise.contiguous()}, str(out / "noise.safetensors"), metadata=meta)
    scale = max(1, 64 // size)
    to_pil(image[0], scale).save(out / "original.png")
    to_pil((noise[0] / 3).clamp(-1, 1), scale).save(out / "noise.png")  # +-3 standard deviations span the greys
    to_pil(regen[0], scale).save(out / "regenerated.png")  # no sample parameters: its noise is not a seed's
    side = torch.cat([image.cpu(), (noise / 3).clamp(-1, 1)[:, : image.shape[1]], regen])
    image_grid(side, nrow=3, scale=scale).save(out / "side_by_side.png")
    report = {"model": str(model.path), "image": str(args.image), "resized": resized, "prompt": prompt,
              "regen_prompt": regen_prompt, "sampler": spec.name, "steps": grid.steps, "guidance": args.guidance,
              "nfe": 2 * grid.steps - 1, "grid": grid.describe(), "rmse": float(rt.rmse[0]),
              "rmse_grey_levels": float(rt.rmse_grey[0]),
              "max_abs_error": float((regen - image.cpu()).abs().max()),
              "noise_std": float(noise.std()), "noise_mean": float(noise.mean())}
    (out / "invert.json").write_text(json.dumps(report, indent=2))
    edit = f", regenerated as {regen_prompt!r}" if regen_prompt != prompt else ""
    print(f"inverted {args.image} ({prompt!r}{edit}) with {spec.name}, {grid.steps} steps each way "
          f"({report['nfe']} NFE), guidance {args.guidance:g}" + (" (resized)" if resized else ""))
    print(f"noise: mean {report['noise_mean']:+.3f}, std {report['noise_std']:.3f} (standard normal: 0, 1)")
    print(f"reconstruction: RMSE {report['rmse']:.4f} in [-1, 1] = {report['rmse_grey_levels']:.2f} grey levels, "
          f"max abs error {report['max_abs_error']:.3f}")
    for name in OUTPUTS:
        print(out / name)
    return 0

"""One image through inversion and back, as ``diffuscope invert`` and the page (``diffuscope serve``) run it, and the
files both write: the real image, its inverted noise (safetensors and a picture), the regenerated image, the three
side by side, and invert.json with the reconstruction error (inversion.py has the ODE itself).

    result = invert_image(model, image, GenerationRequest(prompts=("3",), steps=50))
    save_inversion(result, "out/", model_path=..., image_name="heldout3.png")
    reachability(result)        # "reachable: regenerated within 0.29 grey levels (RMSE) of the real image ..."
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffuscope.checks.errors import UsageError

if TYPE_CHECKING:  # torch is imported where it is used: the CLI imports OUTPUTS without it
    from torch import Tensor

    from diffuscope.generation.generate import GenerationRequest
    from diffuscope.samplers.inversion import RoundTrip

OUTPUTS = ("original.png", "noise.safetensors", "noise.png", "regenerated.png", "side_by_side.png", "invert.json")


@dataclass(frozen=True)
class InversionResult:
    image: Tensor  # [1, C, H, W] the real image in [-1, 1]
    trip: RoundTrip
    grid: Any  # schedules.SigmaGrid, the same both ways
    sampler: str
    prompt: str | None
    regen_prompt: str | None
    guidance: float
    codec_image: Tensor | None = None  # a latent model: decode(encode(image)), the best the codec can give back

    @property
    def codec_rmse_grey(self) -> float | None:
        """The autoencoder's own reconstruction error in grey levels (None for a pixel model)."""
        return None if self.codec_image is None else _rmse_grey(self.codec_image, self.image)

    @property
    def rmse_to_codec_grey(self) -> float | None:
        """The round trip's distance to the codec's reconstruction in grey levels: what inversion itself loses."""
        return None if self.codec_image is None else _rmse_grey(self.trip.images.float().cpu(), self.codec_image)

    @property
    def nfe(self) -> int:
        return 2 * self.grid.steps - 1  # steps - 1 upwards, steps downwards

    def report(self) -> dict[str, Any]:
        noise, regen = self.trip.noise.float().cpu(), self.trip.images.float().cpu()
        return {"prompt": self.prompt, "regen_prompt": self.regen_prompt, "sampler": self.sampler,
                "steps": self.grid.steps, "guidance": self.guidance, "nfe": self.nfe, "grid": self.grid.describe(),
                "rmse": float(self.trip.rmse[0]), "rmse_grey_levels": float(self.trip.rmse_grey[0]),
                "max_abs_error": float((regen - self.image.cpu().float()).abs().max()),
                "noise_std": float(noise.std()), "noise_mean": float(noise.mean()),
                "codec_rmse_grey_levels": self.codec_rmse_grey, "rmse_to_codec_grey_levels": self.rmse_to_codec_grey}


def _rmse_grey(a: Tensor, b: Tensor) -> float:
    from diffuscope.samplers.inversion import GREY_LEVEL

    return float(((a.float() - b.float()) ** 2).mean().sqrt()) / GREY_LEVEL


def invert_image(model, image: Tensor, request: GenerationRequest, *,
                 regen_prompt: str | None = None) -> InversionResult:
    """Invert ``image`` [1, C, H, W] with ``model`` on the grid of ``request`` (its one prompt or None, sampler,
    steps, spacing or grid, guidance and guidance interval, device) and regenerate it on the same grid (conditioned
    on ``regen_prompt``, default the prompt). Prompts are checked by the model's conditioner; the denoiser is
    guided by ``model.guided`` both ways."""
    import torch

    from diffuscope.grids.store import grid_for
    from diffuscope.samplers import get_sampler
    from diffuscope.samplers.inversion import round_trip
    from diffuscope.samplers.steppers import stepper

    spec = get_sampler(request.sampler)
    stepper(spec.name)  # one that has an upward step
    conditioner, device = model.conditioner, request.device  # prompts -> conditions in one place
    prompts = request.prompts or (None,)
    if len(prompts) != 1:
        raise UsageError(f"one image is inverted: give one prompt, got {len(prompts)}")
    prompt = conditioner.check(prompts[0])
    regen_prompt = conditioner.check(regen_prompt) if regen_prompt else prompt
    guidance = request.guidance
    denoiser = model.guided(guidance, request.guidance_interval if guidance != 1 else None)
    grid = request.grid or grid_for(model.path, model.schedule, request.steps, request.spacing, spec.name)
    cond = None if prompt is None else conditioner.conditions((prompt,), 1).to(device)
    regen_cond = None if regen_prompt is None else conditioner.conditions((regen_prompt,), 1).to(device)
    trip = round_trip(denoiser, image.to(device), grid.sigmas, sampler=spec.name, cond=cond, regen_cond=regen_cond,
                      codec=model)
    codec_image = None
    if model.codec is not None:  # what the autoencoder alone gives back
        with torch.inference_mode():
            codec_image = model.decode(model.encode(image.to(device))).float().cpu()
    return InversionResult(image.cpu(), trip, grid, spec.name, prompt, regen_prompt, guidance, codec_image)


def reachability(result: InversionResult) -> str:
    """The lesson's claim "any image is reachable from noise", answered for this image in one sentence."""
    r = result.report()
    how = f"{r['steps']} steps each way ({r['nfe']} NFE) of {r['sampler']}"
    if result.regen_prompt != result.prompt:
        return (f"edited: inverted as {result.prompt!r}, regenerated as {result.regen_prompt!r} with {how}; "
                f"{r['rmse_grey_levels']:.2f} grey levels (RMSE) from the original")
    grey = r["rmse_grey_levels"]
    noise = f"that noise has std {r['noise_std']:.2f} (a standard normal draw: 1)"
    if result.codec_image is not None:  # a latent model: the autoencoder alone already loses some detail
        lost = r["rmse_to_codec_grey_levels"]
        verdict = "reachable" if lost <= 1 else "not reached at this step count"
        hint = "" if lost <= 1 else " (more steps shrink the round trip's error)"
        return (f"{verdict}: regenerated within {lost:.2f} grey levels (RMSE) of the autoencoder's own "
                f"reconstruction, {grey:.2f} of the real image (the autoencoder alone: "
                f"{r['codec_rmse_grey_levels']:.2f}), from its inverted noise, {how}{hint}; {noise}")
    verdict = "reachable" if grey <= 1 else "not reached at this step count"
    hint = "" if grey <= 1 else " (more steps shrink the round trip's error)"
    return (f"{verdict}: regenerated within {grey:.2f} grey levels (RMSE) of the real image from its inverted "
            f"noise, {how}{hint}; {noise}")


def save_inversion(result: InversionResult, out: str | Path, **about: Any) -> list[Path]:
    """Write OUTPUTS into ``out`` (created); ``about`` (model, image, ...) goes into invert.json first."""
    import torch
    from safetensors.torch import save_file

    from diffuscope.io.outputs import save_atomic, write_text_atomic, writing
    from diffuscope.viz import image_grid, to_pil

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    noise, regen = result.trip.noise.float().cpu(), result.trip.images.float().cpu()
    image = result.image.float()
    size = image.shape[-1]
    meta = {"sampler": result.sampler, "steps": str(result.grid.steps),
            "sigma_max": str(float(result.grid.sigmas[0])), "prompt": str(result.prompt),
            **{k: str(v) for k, v in about.items()}}
    with writing(out / "noise.safetensors", remove_partial=True):
        save_file({"noise": noise.contiguous()}, str(out / "noise.safetensors"), metadata=meta)
    scale = max(1, 64 // size)

    def png(picture, name: str) -> None:  # whole or nothing; a full disk is one line naming the file
        save_atomic(out / name, lambda f: picture.save(f, format="PNG"), overwrite=False)

    png(to_pil(image[0], scale), "original.png")
    # +-3 standard deviations span the greys; a latent's first channels stand in for the image's
    shown = (noise / 3).clamp(-1, 1)[:, : image.shape[1]]
    if shown.shape[1] < image.shape[1]:
        shown = shown[:, :1].expand(-1, image.shape[1], -1, -1)  # fewer latent channels: the first, in grey
    if shown.shape[-1] != size:
        shown = torch.nn.functional.interpolate(shown, size=image.shape[-2:], mode="nearest")
    png(to_pil(shown[0], scale), "noise.png")
    png(to_pil(regen[0], scale), "regenerated.png")  # no sample parameters: its noise is not a seed's
    png(image_grid(torch.cat([image, shown, regen]), nrow=3, scale=scale), "side_by_side.png")
    write_text_atomic(out / "invert.json", json.dumps({**about, **result.report(),
                                                       "reachability": reachability(result)}, indent=2),
                      overwrite=False)
    return [out / name for name in OUTPUTS]

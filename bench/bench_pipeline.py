"""A diffusers pipeline folder (Stable Diffusion layout) through ``load_pipeline_model``: load time, parity of our
guided samplers with the pipeline's own call, and wall time ours vs the pipeline with the UNet time equalised.

    python bench/bench_pipeline.py                       # a tiny random SD pipeline built from configs (tests/)
    python bench/bench_pipeline.py --model PATH --steps 25 --device cuda --dtype fp16

For each sampler the pipeline runs ``pipe(prompt, num_inference_steps=N, guidance_scale=g, latents=...,
output_type="latent")`` with the matching scheduler (a fresh one per run) and ours runs the sampler on the loaded
model's denoiser with classifier-free guidance from the same initial latents (see tests/test_pipeline_parity.py for
the start states). Printed per sampler: the max relative difference of the final latents, the wall time of each
side (median over rounds, interleaved), and the time each spends outside its UNet calls (the UNet is timed by
forward hooks), which removes the load noise of a shared machine from the comparison.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from diffuscope.adapters.diffusers import sigmas_for_timesteps
from diffuscope.adapters.pipeline import denoiser_from_pipeline, load_pipeline_model
from diffuscope.core.guidance import CFGDenoiser
from diffuscope.samplers import sample_ddim, sample_dpmpp_2m, sample_euler, sample_heun

SAMPLERS = {  # name: (diffusers scheduler, config overrides, ours, starts in sigma space)
    "DDIM": ("DDIMScheduler", {"set_alpha_to_one": True, "clip_sample": False}, sample_ddim, False),
    "Euler": ("EulerDiscreteScheduler", {}, sample_euler, True),
    "Heun": ("HeunDiscreteScheduler", {}, sample_heun, True),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"final_sigmas_type": "zero"}, sample_dpmpp_2m, False),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"final_sigmas_type": "zero", "use_karras_sigmas": True},
                        sample_dpmpp_2m, False),
}


class UNetTimer:
    """Adds up the wall time inside a module's forward calls (hooks; synchronised on CUDA)."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        self.seconds, self.calls, self.device = 0.0, 0, device
        module.register_forward_pre_hook(self._pre)
        module.register_forward_hook(self._post)

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def _pre(self, *_):
        self._sync()
        self._t = time.perf_counter()

    def _post(self, *_):
        self._sync()
        self.seconds += time.perf_counter() - self._t
        self.calls += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a pipeline folder (default: a tiny random one built from configs)")
    ap.add_argument("--prompt", default="a red cat")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    import diffusers

    if args.model is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from tiny_pipelines import save_text_pipeline

        args.model = save_text_pipeline(Path(tempfile.mkdtemp()) / "tiny-sd")
    t = time.perf_counter()
    model = load_pipeline_model(args.model, device=device, dtype=args.dtype)
    load_ours = time.perf_counter() - t
    t = time.perf_counter()
    dtype = next(model.denoiser.net.parameters()).dtype
    pipe = diffusers.DiffusionPipeline.from_pretrained(args.model, local_files_only=True, torch_dtype=dtype).to(device)
    load_theirs = time.perf_counter() - t
    pipe.set_progress_bar_config(disable=True)
    print(f"model {args.model}: load_pipeline_model {load_ours:.2f} s, DiffusionPipeline.from_pretrained "
          f"{load_theirs:.2f} s; {args.steps} steps, guidance {args.guidance}, {args.device} {args.dtype}, "
          f"{args.threads} thread(s)")
    unet = model.denoiser.net
    pipe.unet = unet  # the same module on both sides (and the same timer)
    timer = UNetTimer(unet, device)
    cond, null = model.conditioner.encode([args.prompt]), model.conditioner.null(1)
    latents = torch.randn(1, *model.sample_shape, generator=torch.Generator().manual_seed(0)).to(device)
    print("| sampler | rel. diff | ours s | pipeline s | ours outside UNet s | pipeline outside UNet s |")
    print("|---|---|---|---|---|---|")
    for name, (cls_name, overrides, fn, sigma_space) in SAMPLERS.items():
        rows = {"ours": [], "pipe": []}
        for _ in range(args.rounds):
            scheduler = getattr(diffusers, cls_name).from_config(pipe.scheduler.config, **overrides)
            run = diffusers.StableDiffusionPipeline(**{**pipe.components, "scheduler": scheduler})
            run.set_progress_bar_config(disable=True)
            timer.seconds = 0.0
            t = time.perf_counter()
            expected = run(args.prompt, num_inference_steps=args.steps, guidance_scale=args.guidance,
                           latents=latents.clone().to(dtype), output_type="latent").images
            rows["pipe"].append((time.perf_counter() - t, timer.seconds))
            scheduler.set_timesteps(args.steps)
            t = time.perf_counter()
            denoiser = denoiser_from_pipeline(unet, dict(scheduler.config), net_dtype=dtype)
            if hasattr(scheduler, "sigmas") and cls_name != "HeunDiscreteScheduler":
                sigmas = torch.cat([scheduler.sigmas[:-1].double(), torch.zeros(1, dtype=torch.float64)])
            else:
                sigmas = sigmas_for_timesteps(denoiser.schedule, scheduler.timesteps)
            start = float(scheduler.init_noise_sigma) if sigma_space else (1 + float(sigmas[0]) ** 2) ** 0.5
            timer.seconds = 0.0
            with torch.inference_mode():
                out = fn(CFGDenoiser(denoiser, args.guidance, null.to(device)), latents * start, sigmas.to(device),
                         cond=cond.to(device))
            if device.type == "cuda":
                torch.cuda.synchronize()
            rows["ours"].append((time.perf_counter() - t, timer.seconds))
        diff = float((out.double() - expected.double()).abs().max() / expected.double().abs().max())
        med = {k: (statistics.median(w for w, _ in v), statistics.median(w - u for w, u in v)) for k, v in rows.items()}
        print(f"| {name} | {diff:.1e} | {med['ours'][0]:.3f} | {med['pipe'][0]:.3f} | {med['ours'][1]:.4f} | "
              f"{med['pipe'][1]:.4f} |")


if __name__ == "__main__":
    main()

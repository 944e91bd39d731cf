"""The CUDA path agrees with the CPU path: the shipped model, several samplers, guidance everywhere and on an interval.

    python bench/check_cuda.py            # needs a CUDA device; exits 1 if a check fails, 2 if there is no device

Checks (each prints one line): the samplers' sigma batch lives on the device; the denoiser runs there and keeps
x's dtype; every sampler's images on CUDA match the CPU's within `TOL` (mean
absolute difference in [-1, 1] units: the two devices' convolutions round differently, and TF32 is left as PyTorch
sets it); guidance on an interval with per-row sigmas (the tensor path) matches the same on CPU; then the time of
one generation on each device, for information.
"""

from __future__ import annotations

import sys
import time

import torch

from diffuscope.checkpoint import load_model
from diffuscope.generate import generate
from diffuscope.guidance import CFGDenoiser
from diffuscope.samplers.base import sigma_batch

TOL = 2e-3
SAMPLERS = ("iPNDM", "Heun", "DPM++ 2M", "UniPC", "Euler a", "DDPM")


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    failed = []

    def check(name: str, ok: bool, detail: str) -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
        if not ok:
            failed.append(name)

    batch = sigma_batch(1.5, torch.zeros(8, device="cuda"))
    check("sampler sigma batch", batch.device.type == "cuda" and batch.dtype == torch.float64
          and batch.tolist() == [1.5] * 8, f"{batch.device}, {batch.dtype}, values {batch.unique().tolist()}")

    cpu, gpu = load_model("mnist"), load_model("mnist", device="cuda")
    u = cpu.config.unet
    shape, labels = (u.in_channels, u.image_size, u.image_size), torch.arange(10).repeat(7)[:64]
    with torch.inference_mode():
        x = torch.randn(4, *shape, device="cuda")
        out = gpu.denoiser(x, sigma_batch(2.0, x), torch.arange(4, device="cuda"))
    check("denoiser on the GPU", out.device.type == "cuda" and out.dtype == x.dtype, f"{out.device}, {out.dtype}")

    for sampler in SAMPLERS:
        for interval in (None, (0.28, 5.42)):
            kw = dict(sampler=sampler, steps=20, guidance=1.25, guidance_interval=interval, seed=0, null_label=10)
            a = generate(cpu.denoiser, cpu.denoiser.schedule, labels, shape, **kw).images
            b = generate(gpu.denoiser, gpu.denoiser.schedule, labels, shape, device="cuda", **kw).images
            diff = (a - b).abs()
            check(f"{sampler}, interval {interval}", float(diff.mean()) < TOL,
                  f"mean |cpu - cuda| {float(diff.mean()):.2e}, max {float(diff.max()):.2e}")

    sigma = torch.tensor([0.2, 1.0, 3.0, 9.0], dtype=torch.float64)
    cond = torch.tensor([1, 2, 3, 4])
    with torch.inference_mode():
        x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(0)) * 2
        ref = CFGDenoiser(cpu.denoiser, 2.0, 10, (0.28, 5.42))(x, sigma, cond)
        out = CFGDenoiser(gpu.denoiser, 2.0, 10, (0.28, 5.42))(x.cuda(), sigma.cuda(), cond.cuda()).cpu()
    diff = float((ref - out).abs().mean())
    check("interval, per-row sigmas", diff < TOL, f"mean |cpu - cuda| {diff:.2e}")

    for device, model in (("cpu", cpu), ("cuda", gpu)):
        kw = dict(sampler="iPNDM", steps=20, guidance=1.25, seed=0, null_label=10, device=device, batch_size=256)
        generate(model.denoiser, model.denoiser.schedule, labels[:8], shape, **kw)  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        generate(model.denoiser, model.denoiser.schedule, torch.arange(10).repeat(26)[:256], shape, **kw)
        torch.cuda.synchronize()
        print(f"info: 256 images, iPNDM 20 steps, guidance 1.25 on {device}: {time.perf_counter() - start:.2f} s")
    print("all checks passed" if not failed else f"{len(failed)} check(s) failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

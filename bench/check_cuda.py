"""The CUDA path agrees with the CPU path: the checks live in tests/test_cuda.py (marker ``cuda``); this runs them,
then times one generation on each device, for information.

    python bench/check_cuda.py            # needs a CUDA device; exits 1 if a check fails, 2 if there is no device
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

from diffuscope.generation.generate import generate
from diffuscope.models.load import load_model


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    tests = Path(__file__).resolve().parent.parent / "tests" / "test_cuda.py"
    if pytest.main([str(tests), "-m", "cuda", "-q", "-p", "no:cacheprovider"]) != 0:
        return 1
    for device in ("cpu", "cuda"):
        model = load_model("mnist", device=device)
        u = model.config.unet
        shape = (u.in_channels, u.image_size, u.image_size)
        kw = dict(sampler="iPNDM", steps=20, guidance=1.25, seed=0, null_label=10, device=device, batch_size=256)
        generate(model.denoiser, model.denoiser.schedule, torch.arange(8), shape, **kw)  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        generate(model.denoiser, model.denoiser.schedule, torch.arange(10).repeat(26)[:256], shape, **kw)
        torch.cuda.synchronize()
        print(f"info: 256 images, iPNDM 20 steps, guidance 1.25 on {device}: {time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

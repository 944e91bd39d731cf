"""The CUDA path agrees with the CPU path: the checks live in tests/test_cuda.py (marker ``cuda``); this runs them,
then times one generation on each device, for information.

    python bench/check_cuda.py            # needs a CUDA device; exits 1 if a check fails, 2 if there is no device
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from diffuscope.generation.generate import GenerationRequest, generate
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
        digits = tuple(str(c) for c in range(10))
        request = GenerationRequest(prompts=digits, n=8, sampler="iPNDM", steps=20, guidance=1.25, device=device,
                                    batch_size=256)
        generate(model, request)  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        generate(model, replace(request, n=256))
        torch.cuda.synchronize()
        print(f"info: 256 images, iPNDM 20 steps, guidance 1.25 on {device}: {time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

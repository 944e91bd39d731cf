"""Device choice, in one place: "auto" takes CUDA when it is there, else the CPU."""

from __future__ import annotations

import torch

from diffuscope.checks.errors import UsageError, quote

DEVICES = ("auto", "cpu", "cuda")


def pick_device(name: str = "auto") -> torch.device:
    """"auto" -> cuda if available else cpu; "cpu"; "cuda" (an error without a CUDA GPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available here (valid: auto, cpu, cuda)")
    if name not in DEVICES:
        raise UsageError(f"unknown device {quote(name)} (valid: {', '.join(DEVICES)})")
    return torch.device(name)

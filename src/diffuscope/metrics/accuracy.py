"""Prompt accuracy: the share of generated images the classifier recognises as the class they were prompted with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def _labels(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-d integer array, got {a.dtype} {a.shape}")
    return a.astype(np.int64)


@dataclass(frozen=True, eq=False)
class PromptAccuracy:
    accuracy: float  # over all images (NaN when there are none)
    per_class: tuple[float, ...]  # accuracy per prompted class, NaN for a class never prompted
    counts: tuple[int, ...]  # images prompted per class
    correct: np.ndarray  # bool [N]: predicted == prompted (what the bootstrap resamples)


def prompt_accuracy(predicted: Any, prompted: Any, num_classes: int) -> PromptAccuracy:
    """Accuracy of predicted labels against the prompted labels, overall and per prompted class."""
    pred, want = _labels(predicted, "predicted labels"), _labels(prompted, "prompted labels")
    if pred.shape != want.shape:
        raise ValueError(f"{len(pred)} predictions for {len(want)} prompts")
    if len(want) and (want.min() < 0 or want.max() >= num_classes):
        raise ValueError(f"prompted labels must lie in 0..{num_classes - 1}")
    correct = pred == want
    counts = np.bincount(want, minlength=num_classes)
    hits = np.bincount(want, weights=correct, minlength=num_classes)
    per_class = tuple(float(h / c) if c else float("nan") for h, c in zip(hits, counts))
    overall = float(correct.mean()) if len(correct) else float("nan")
    return PromptAccuracy(overall, per_class, tuple(int(c) for c in counts), correct)

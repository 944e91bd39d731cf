"""Convergence: how far each k-step sample is from a high-NFE reference sample drawn from the same initial noise.

The DPM-Solver papers measure solvers this way (Lu et al. 2022, DPM-Solver, Sec. 6); a distribution metric alone
can hide it (FD may even get worse with more steps, ANCHORS.md). Two distances, per image and averaged:

    pixel RMSE    sqrt(mean over C, H, W of (x - x_ref)^2), images in [-1, 1]
    feature RMSE  sqrt(mean over D of (f(x) - f(x_ref))^2) in the classifier's feature space
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Convergence:
    pixel_rmse: tuple[float, ...]  # per image
    feature_rmse: tuple[float, ...] | None  # per image; None without a classifier
    mean_pixel_rmse: float
    mean_feature_rmse: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"mean_pixel_rmse": self.mean_pixel_rmse, "mean_feature_rmse": self.mean_feature_rmse,
                "pixel_rmse": list(self.pixel_rmse),
                "feature_rmse": None if self.feature_rmse is None else list(self.feature_rmse)}


def rmse_per_row(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Root-mean-square difference per leading index, in float64: [N, ...] x [N, ...] -> [N]."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    d = a.detach().cpu().double() - b.detach().cpu().double()
    return d.reshape(len(d), -1).pow(2).mean(1).sqrt()


def convergence(samples: torch.Tensor, reference: torch.Tensor, classifier=None, *,
                reference_features: torch.Tensor | None = None) -> Convergence:
    """Distance of `samples` [N, C, H, W] to `reference` [N, C, H, W] (image i of both from the same noise).

    classifier          a metrics.Classifier for the feature RMSE (None: pixels only)
    reference_features  the classifier's features of `reference`, when already computed (one reference is
                        compared with many step counts)
    """
    if samples.dim() != 4 or samples.shape != reference.shape or len(samples) == 0:
        raise ValueError(f"samples and reference must be non-empty [N, C, H, W] of one shape, got "
                         f"{tuple(samples.shape)} and {tuple(reference.shape)}")
    pixel = rmse_per_row(samples, reference)
    feature = None
    if classifier is not None:
        ref_f = classifier.features(reference) if reference_features is None else reference_features
        feature = rmse_per_row(classifier.features(samples), ref_f)
    return Convergence(
        pixel_rmse=tuple(pixel.tolist()),
        feature_rmse=None if feature is None else tuple(feature.tolist()),
        mean_pixel_rmse=float(pixel.mean()),
        mean_feature_rmse=None if feature is None else float(feature.mean()),
    )

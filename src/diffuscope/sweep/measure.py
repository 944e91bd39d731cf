"""The numbers of one image set: distribution metrics against the real reference (through ``diffuscope.metrics``),
accuracy against the prompts and convergence to the high-NFE reference sample from the same noise.

The reference's features are computed once and reused for every cell and for the real-vs-real floor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from diffuscope.sweep.config import PR_K


@dataclass(frozen=True)
class Measured:
    values: dict[str, float]  # metric key -> value (config.METRICS keys)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # bootstrap percentile intervals
    extra: dict[str, float] = field(default_factory=dict)  # kid_std, ...
    # per-image arrays for paired comparisons between cells (row i = image i): features, correct, conv_* (RMSE)
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


def _np(x) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


class Meter:
    """Measures image sets against one reference (see the module notes)."""

    def __init__(self, groups: tuple[str, ...], *, features: Callable | None = None, classify: Callable | None = None,
                 reference_images: Tensor | None = None, num_classes: int | None = None, ci_resamples: int = 0,
                 ci_level: float = 0.95, seed: int = 0):
        self.groups = groups
        self.features, self.classify = features, classify
        self.num_classes = num_classes
        self.ci_resamples, self.ci_level, self.seed = ci_resamples, ci_level, seed
        needs_ref = any(g in groups for g in ("fd", "kid", "pr"))
        self.ref_f = _np(features(reference_images)) if needs_ref else None
        self.conv_ref: Tensor | None = None
        self.conv_ref_f: np.ndarray | None = None

    @property
    def n_reference(self) -> int | None:
        return None if self.ref_f is None else len(self.ref_f)

    def set_convergence_reference(self, images: Tensor) -> None:
        """The high-NFE sample every cell is compared with, image by image."""
        self.conv_ref = images
        if self.features is not None:
            self.conv_ref_f = _np(self.features(images))

    def _ci(self) -> dict:
        return {"n_resamples": self.ci_resamples, "level": self.ci_level, "seed": self.seed}

    def measure(self, images: Tensor, labels: Tensor | None, *, convergence: bool = True) -> Measured:
        """Every requested metric of ``images`` (prompted with ``labels``); convergence=False for real images."""
        from diffuscope.metrics import (
            accuracy_interval,
            bootstrap_ci,
            fd_interval,
            frechet_distance,
            kernel_distance,
            kid_interval,
            prompt_accuracy,
        )
        from diffuscope.metrics.convergence import rmse_per_row
        from diffuscope.metrics.manifold import manifold_membership

        values: dict[str, float] = {}
        intervals: dict[str, tuple[float, float]] = {}
        extra: dict[str, float] = {}
        samples: dict[str, np.ndarray] = {}
        ci = self.ci_resamples > 1
        f = _np(self.features(images)) if self.features is not None and (
            self.ref_f is not None or (convergence and "convergence" in self.groups)) else None
        if f is not None and self.ref_f is not None:
            samples["features"] = f
        if "fd" in self.groups:
            values["fd"] = frechet_distance(f, self.ref_f)
            if ci:
                iv = fd_interval(f, self.ref_f, estimate=values["fd"], **self._ci())
                intervals["fd"] = (iv.low, iv.high)
        if "kid" in self.groups:
            values["kid"], extra["kid_std"] = kernel_distance(f, self.ref_f, seed=self.seed)
            iv = kid_interval(f, self.ref_f, estimate=values["kid"], **self._ci()) if ci else None
            if iv is not None:
                intervals["kid"] = (iv.low, iv.high)
        if "pr" in self.groups:
            # precision is a mean over the generated images (each inside the real manifold or not): it gets an
            # interval and a paired form; recall is a mean over the real images against the generated set's
            # manifold, which resampling the generated images changes as a whole: no interval
            fake_in_real, real_in_fake = manifold_membership(self.ref_f, f, k=PR_K)
            values["precision"], values["recall"] = float(fake_in_real.mean()), float(real_in_fake.mean())
            samples["precision"] = fake_in_real.astype(np.float64)
            if ci:
                iv = bootstrap_ci(np.mean, samples["precision"], **self._ci())
                intervals["precision"] = (iv.low, iv.high)
        if "accuracy" in self.groups and labels is not None:
            predicted = torch.as_tensor(self.classify(images)).cpu().long()
            k = self.num_classes or int(max(int(predicted.max()), int(labels.max())) + 1)
            acc = prompt_accuracy(predicted, labels.cpu(), k)
            values["accuracy"] = acc.accuracy
            samples["correct"] = np.asarray(acc.correct, dtype=np.float64)
            if ci:
                iv = accuracy_interval(acc.correct, **self._ci())
                intervals["accuracy"] = (iv.low, iv.high)
        if convergence and "convergence" in self.groups and self.conv_ref is not None:
            per_image = {"conv_pixel": rmse_per_row(images, self.conv_ref).numpy()}
            if f is not None and self.conv_ref_f is not None:
                per_image["conv_feature"] = rmse_per_row(torch.from_numpy(f), torch.from_numpy(self.conv_ref_f)).numpy()
            for key, v in per_image.items():
                values[key] = float(v.mean())
                samples[key] = v
                if ci and len(v) > 1:
                    iv = bootstrap_ci(np.mean, v, **self._ci())
                    intervals[key] = (iv.low, iv.high)
        return Measured(values, intervals, extra, samples)

    def pairs(self, key: str, samples: dict[str, np.ndarray]) -> bool:
        """Whether ``paired_gap`` gives metric ``key`` an interval for sets holding ``samples``."""
        need = {"fd": "features", "accuracy": "correct"}.get(key, key)
        paired = key in ("fd", "accuracy", "precision") or key.startswith("conv_")
        return self.ci_resamples >= 2 and paired and need in samples

    def paired_gap(self, key: str, a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[float, ...] | None:
        """(estimate, low, high): the paired bootstrap 95% interval of metric ``key`` of set a minus set b, for two
        sets from the same noise (``Measured.samples`` of each); None for metrics without a paired form (KID,
        recall) or without intervals (ci_resamples < 2)."""
        from diffuscope.metrics import frechet_distance, paired_difference_ci

        if not self.pairs(key, a):
            return None
        opts = {"n_resamples": self.ci_resamples, "level": self.ci_level, "seed": self.seed}
        if key == "fd" and "features" in a and "features" in b:
            iv = paired_difference_ci(lambda f, ref: frechet_distance(f, ref, method="eigh"), a["features"],
                                      b["features"], self.ref_f, **opts)
        elif key == "accuracy" and "correct" in a and "correct" in b:
            iv = paired_difference_ci(np.mean, a["correct"], b["correct"], **opts)
        elif (key == "precision" or key.startswith("conv_")) and key in a and key in b:  # per-image means
            iv = paired_difference_ci(np.mean, a[key], b[key], **opts)
        else:
            return None
        return iv.estimate, iv.low, iv.high

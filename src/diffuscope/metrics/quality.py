"""One call for every distribution metric of a generated set against a real reference set.

    ref = embed(classifier, reference_images)                      # once per reference set
    report = compute_metrics(generated, prompted_labels, classifier, ref)
    report.fd, report.fd_ci, report.kid, report.precision, report.accuracy, report.to_dict()

Generated images are clamped to [-1, 1] before the classifier sees them (what a saved PNG holds; samplers can
overshoot slightly), unless clamp=False. Compare every number with ``floor.real_floor`` at the same N.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from diffuscope.checks.errors import UsageError, quote
from diffuscope.metrics.accuracy import prompt_accuracy
from diffuscope.metrics.distances import as_features, frechet_distance, kernel_distance
from diffuscope.metrics.manifold import manifold_metrics
from diffuscope.metrics.stats import DEFAULT_RESAMPLES, accuracy_interval, fd_interval, kid_interval


@dataclass(frozen=True, eq=False)
class Embedding:
    """A classifier's view of an image set: penultimate features [N, D] and logits [N, K] (float32, CPU)."""

    features: torch.Tensor
    logits: torch.Tensor

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def predicted(self) -> torch.Tensor:
        return self.logits.argmax(1)


def embed(classifier, images: torch.Tensor, *, clamp: bool = True, batch_size: int = 500) -> Embedding:
    """Features and logits of `images` [N, C, H, W] (clamped to [-1, 1] unless clamp=False)."""
    x = images.clamp(-1.0, 1.0) if clamp else images
    features, logits = classifier.embed(x, batch_size)
    return Embedding(features, logits)


@dataclass(frozen=True)
class QualityReport:
    """All numbers for one generated set vs one reference set. Lower is better for fd/kid; higher for the rest."""

    comparison: str  # "generated vs held-out", "held-out vs held-out" (a floor), ...
    n_generated: int
    n_reference: int
    fd: float  # Frechet distance in classifier-feature space (Heusel et al. 2017, with our own features)
    fd_ci: tuple[float, float] | None  # bootstrap interval (None when n_resamples == 0)
    kid: float  # unbiased MMD^2, cubic kernel (Binkowski et al. 2018); can be slightly negative
    kid_std: float  # over KID subsets (0 when one subset holds both sets)
    kid_ci: tuple[float, float] | None
    precision: float  # Kynkaanniemi et al. 2019, k=3
    recall: float
    density: float  # Naeem et al. 2020, k=5 (can exceed 1)
    coverage: float
    accuracy: float | None  # share recognised as the prompted class; None without prompts
    accuracy_ci: tuple[float, float] | None
    per_class_accuracy: tuple[float, ...] | None  # per prompted class, NaN for a class never prompted
    ci_level: float
    n_resamples: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN -> None, tuples -> lists)."""

        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, tuple | list):
                return [clean(u) for u in v]
            return v

        return {k: clean(v) for k, v in asdict(self).items()}


def _pair(interval) -> tuple[float, float] | None:
    return None if interval is None else (interval.low, interval.high)


@dataclass(frozen=True)
class MetricOptions:
    """How ``evaluate`` measures: the neighbourhood sizes of precision/recall (``k_pr``, Kynkaanniemi et al. 2019)
    and density/coverage (``k_dc``, Naeem et al. 2020), the KID subsets (Binkowski et al. 2018), and the bootstrap
    intervals: ``n_resamples`` resamples (0 = no intervals) at ``level``, seeded (as the KID subsets) by ``seed``."""

    k_pr: int = 3
    k_dc: int = 5
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    n_resamples: int = DEFAULT_RESAMPLES
    level: float = 0.95
    seed: int = 0


DEFAULT_METRIC_OPTIONS = MetricOptions()


def metric_options(options: Mapping[str, Any]) -> MetricOptions:
    """MetricOptions from flat names ({"n_resamples": 0, "seed": 1}); an unknown name is refused, naming the valid
    ones."""
    valid = [f.name for f in fields(MetricOptions)]
    unknown = [key for key in options if key not in valid]
    if unknown:
        raise UsageError(f"unknown metric option{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(quote(k) for k in unknown)} (valid: {', '.join(valid)})")
    return MetricOptions(**options)


def evaluate(generated: Embedding | Any, reference: Embedding | Any, *, prompted: Any = None,
             predicted: Any = None, num_classes: int | None = None, comparison: str = "generated vs reference",
             options: MetricOptions = DEFAULT_METRIC_OPTIONS) -> QualityReport:
    """Metrics from features. `generated`/`reference`: Embeddings, or feature arrays [N, D].

    prompted     the class each generated image was asked for ([N] ints); None skips accuracy
    predicted    the classifier's class per generated image; default: argmax of generated.logits
    num_classes  default: the logits' width
    options      k_pr, k_dc, the KID subsets and the bootstrap intervals (MetricOptions)
    """
    k_pr, k_dc, n_resamples, level, seed = options.k_pr, options.k_dc, options.n_resamples, options.level, options.seed
    gen_f = as_features(generated.features if isinstance(generated, Embedding) else generated, "generated")
    ref_f = as_features(reference.features if isinstance(reference, Embedding) else reference, "reference")
    if gen_f.shape[1] != ref_f.shape[1]:
        raise ValueError(f"feature dimensions differ: {gen_f.shape[1]} vs {ref_f.shape[1]}")
    need = max(k_pr, k_dc) + 1
    if min(len(gen_f), len(ref_f)) < need:
        raise ValueError(f"need at least {need} images per set (k={max(k_pr, k_dc)}), got {len(gen_f)} "
                         f"generated and {len(ref_f)} reference")
    ci = {"n_resamples": n_resamples, "level": level, "seed": seed}
    fd = frechet_distance(gen_f, ref_f)
    kid, kid_std = kernel_distance(gen_f, ref_f, num_subsets=options.kid_subsets, subset_size=options.kid_subset_size,
                                   seed=seed)
    fd_ci = fd_interval(gen_f, ref_f, estimate=fd, **ci) if n_resamples else None
    kid_ci = kid_interval(gen_f, ref_f, estimate=kid, **ci) if n_resamples else None
    manifold = manifold_metrics(ref_f, gen_f, k_pr=k_pr, k_dc=k_dc)

    accuracy = accuracy_ci = per_class = None
    if prompted is not None:
        if predicted is None:
            if not isinstance(generated, Embedding):
                raise ValueError("pass predicted labels (or an Embedding with logits) to score prompts")
            predicted = generated.predicted
        if num_classes is None:
            if not isinstance(generated, Embedding):
                raise ValueError("pass num_classes (or an Embedding with logits) to score prompts")
            num_classes = int(generated.logits.shape[1])
        acc = prompt_accuracy(predicted, prompted, num_classes)
        accuracy, per_class = acc.accuracy, acc.per_class
        accuracy_ci = _pair(accuracy_interval(acc.correct, **ci)) if n_resamples else None
    return QualityReport(
        comparison=comparison, n_generated=len(gen_f), n_reference=len(ref_f), fd=fd, fd_ci=_pair(fd_ci),
        kid=kid, kid_std=kid_std, kid_ci=_pair(kid_ci), precision=manifold.precision, recall=manifold.recall,
        density=manifold.density, coverage=manifold.coverage, accuracy=accuracy, accuracy_ci=accuracy_ci,
        per_class_accuracy=per_class, ci_level=level, n_resamples=n_resamples)


def compute_metrics(generated: torch.Tensor, prompted: Any, classifier, reference: torch.Tensor | Embedding, *,
                    clamp: bool = True, comparison: str = "generated vs reference", **options) -> QualityReport:
    """Metrics of generated images [N, C, H, W] (prompted with class `prompted[i]`, or None) against reference
    images (or their Embedding). `options`: MetricOptions' fields by name (k_pr, k_dc, kid_*, n_resamples, level,
    seed), for ``evaluate``."""
    gen = embed(classifier, generated, clamp=clamp)
    ref = reference if isinstance(reference, Embedding) else embed(classifier, reference, clamp=False)
    if prompted is not None:
        prompted = np.asarray(prompted.cpu() if hasattr(prompted, "cpu") else prompted)
    return evaluate(gen, ref, prompted=prompted, num_classes=classifier.info.num_classes, comparison=comparison,
                    options=metric_options(options))

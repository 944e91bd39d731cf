"""The real-vs-real floor: the metrics between two disjoint sets of REAL images of the same size N.

FD is biased upwards at small N and KID, precision, recall and coverage all move with N (ANCHORS.md: quality vs
steps), so a generated set's numbers mean something only next to the floor at the same N and reference set.

    split = split_real(test, n, seed=0)                 # reference set + a disjoint real stand-in, both size n
    report = compute_metrics(generated, prompts, classifier, split.reference.images)
    floor = real_floor(classifier, test, n, seed=0)     # the same reference, the stand-in as "generated"

Both sets come from the held-out (test) split, which the classifier never trained on. Selection is stratified:
within each class the images are shuffled (seeded), then classes are interleaved, so any prefix is as
class-balanced as possible. When 2N exceeds the held-out split, pass ``train=`` (the train split): the
reference is then N held-out images and the stand-in N *train* images ("train vs held-out"). The classifier has
seen those train images, so the floor's accuracy is then training accuracy (optimistic) and its features sit a
little closer to the class centres; the floor is still the right order of magnitude. Otherwise N is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from diffuscope.data import ImageDataset
from diffuscope.errors import UsageError
from diffuscope.metrics.quality import QualityReport, compute_metrics


@dataclass(frozen=True)
class RealSplit:
    reference: ImageDataset  # n held-out images: the reference for generated images and for the floor
    stand_in: ImageDataset  # n other real images playing the generated set in the floor
    comparison: str  # "held-out vs held-out" or "train vs held-out"


def stratified_order(labels: torch.Tensor, seed: int) -> np.ndarray:
    """Indices: shuffled within each class (seeded), classes interleaved (rank within class, then random)."""
    y = labels.cpu().numpy()
    rng = np.random.default_rng(seed)
    rank = np.empty(len(y))
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        rank[rng.permutation(members)] = np.arange(len(members))
    return np.lexsort((rng.random(len(y)), rank))


def _subset(data: ImageDataset, idx: np.ndarray) -> ImageDataset:
    t = torch.from_numpy(idx)
    return ImageDataset(data.images[t], data.labels[t], data.class_names, data.name)


def split_real(test: ImageDataset, n: int, *, seed: int = 0, train: ImageDataset | None = None) -> RealSplit:
    """Two disjoint real sets of n images (see the module notes); deterministic in (data, n, seed)."""
    if n < 6:
        raise UsageError(f"the real floor needs n >= 6 images per set (k-NN metrics use k=5), got {n}")
    order = stratified_order(test.labels, seed)
    if 2 * n <= len(test):
        return RealSplit(_subset(test, order[:n]), _subset(test, order[n:2 * n]), "held-out vs held-out")
    if train is not None and n <= min(len(test), len(train)):
        if train.class_names != test.class_names or train.images.shape[1:] != test.images.shape[1:]:
            raise UsageError("train and test splits differ in classes or image shape")
        stand_in = _subset(train, stratified_order(train.labels, seed + 1)[:n])
        return RealSplit(_subset(test, order[:n]), stand_in, "train vs held-out")
    most = len(test) if train is not None else len(test) // 2
    raise UsageError(f"n={n} is too many for the real floor: {test.name!r} holds {len(test)} held-out images "
                     f"(at most {len(test) // 2} per set held-out vs held-out, or up to {len(test)} with the "
                     f"train split as the stand-in); use n <= {most}")


def real_floor(classifier, test: ImageDataset, n: int, *, seed: int = 0, train: ImageDataset | None = None,
               **options) -> QualityReport:
    """The QualityReport of real images vs the reference of ``split_real(test, n, seed=seed, train=train)``.

    The stand-in's true labels play the prompts, so `accuracy` is the classifier's accuracy on real images: the
    ceiling for prompt accuracy. `options` go to ``evaluate`` (n_resamples, level, k_pr, ...).
    """
    split = split_real(test, n, seed=seed, train=train)
    return compute_metrics(split.stand_in.images, split.stand_in.labels, classifier, split.reference.images,
                           clamp=False, comparison=split.comparison, **{"seed": seed, **options})

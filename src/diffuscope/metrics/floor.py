"""The real-vs-real floor: the metrics between two disjoint sets of REAL images of the same size N.

FD is biased upwards at small N and KID, precision, recall and coverage all move with N (ANCHORS.md: quality vs
steps), so a generated set's numbers mean something only next to the floor at the same N and reference set.

    split = split_real(test, n, seed=0)                 # reference set + a disjoint real stand-in, both size n
    report = compute_metrics(generated, prompts, classifier, split.reference.images)
    floor = real_floor(classifier, test, n, seed=0)     # the same reference, the stand-in as "generated"

One rule chooses real images, for the quality bar, bench/ and the sweep alike (``real_sets``): only the prompted
classes count, in the prompts' proportions (FD of generated 7s against all digits would measure the prompt, not the
sampler). Within each class the held-out images are shuffled (seeded):

    reference  held-out images of the prompted classes: per class as many as it is prompted
    stand-in   n other real images with exactly the prompted labels, playing the generated set for the
               real-vs-real floor: more held-out images when enough remain ("held-out vs held-out"), else train
               images ("train vs held-out"; the classifier has seen them, so the floor's accuracy is then training
               accuracy, optimistic, and its features sit a little closer to the class centres)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffuscope.checks.errors import UsageError, quote
from diffuscope.data import ImageDataset
from diffuscope.metrics.quality import QualityReport, compute_metrics


@dataclass(frozen=True)
class RealSplit:
    reference: ImageDataset  # n held-out images: the reference for generated images and for the floor
    stand_in: ImageDataset  # n other real images playing the generated set in the floor
    comparison: str  # "held-out vs held-out" or "train vs held-out"


@dataclass(frozen=True)
class RealSets:
    reference: Tensor
    stand_in: Tensor
    stand_in_labels: Tensor
    comparison: str
    reference_labels: Tensor | None = None  # the reference images' classes


def _shuffled_by_class(labels: Tensor, seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = labels.cpu().numpy()
    return {int(c): rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)}


def real_sets(test, labels: Tensor, *, seed: int = 0, train: Callable[[], Any] | None = None,
              class_names: tuple[str, ...] = ()) -> RealSets:
    """The reference and stand-in sets for ``labels`` (see the module notes); deterministic in (data, labels,
    seed). ``test``/``train()`` are data.ImageDataset; train is loaded only when held-out images run short."""
    want = {int(c): int(k) for c, k in zip(*np.unique(labels.cpu().numpy(), return_counts=True))}
    held = _shuffled_by_class(test.labels, seed)
    ref_idx, rest = [], {}
    for c, k in want.items():
        pool = held.get(c, np.empty(0, dtype=np.int64))
        if len(pool) == 0:
            raise UsageError(f"the held-out split of {quote(test.name)} has no images of class "
                             f"{quote(_name(class_names, c))}: no reference for it")
        ref_idx.append(pool[:k])
        rest[c] = pool[min(k, len(pool)):]
    ref_t = torch.from_numpy(np.concatenate(ref_idx))
    reference, reference_labels = test.images[ref_t], test.labels[ref_t]
    if all(len(rest[c]) >= k for c, k in want.items()):
        idx = np.concatenate([rest[c][:k] for c, k in want.items()])
        return RealSets(reference, test.images[torch.from_numpy(idx)], test.labels[torch.from_numpy(idx)],
                        "held-out vs held-out", reference_labels)
    pool_train = train() if train is not None else None
    tr = _shuffled_by_class(pool_train.labels, seed + 1) if pool_train is not None else {}
    short = [c for c, k in want.items() if len(tr.get(c, ())) < k]
    if short:
        c = short[0]
        most = max(len(held.get(c, ())) // 2, len(tr.get(c, ())))
        raise UsageError(f"n is too large for a real-vs-real floor at the same N: class {quote(_name(class_names, c))} "
                         f"is prompted {want[c]} times but {quote(test.name)} holds {len(held.get(c, ()))} held-out "
                         f"and {len(tr.get(c, ()))} train images of it (at most {most} per prompted class); "
                         f"lower --n or use --metrics convergence")
    idx = np.concatenate([tr[c][:k] for c, k in want.items()])
    t = torch.from_numpy(idx)
    return RealSets(reference, pool_train.images[t], pool_train.labels[t], "train vs held-out", reference_labels)


def _name(class_names: tuple[str, ...], c: int) -> str:
    return class_names[c] if c < len(class_names) else str(c)


def balanced_labels(num_classes: int, n: int) -> torch.Tensor:
    """n labels round-robin over the classes: what prompt 'all' asks for."""
    return torch.arange(n) % num_classes


def split_real(test: ImageDataset, n: int, *, seed: int = 0, train: ImageDataset | None = None,
               labels: torch.Tensor | None = None) -> RealSplit:
    """Two disjoint real sets of n images for ``labels`` (default: balanced over every class), by the one rule of
    ``real_sets``; deterministic in (data, labels, seed)."""
    if n < 6:
        raise UsageError(f"the real floor needs n >= 6 images per set (k-NN metrics use k=5), got {n}")
    labels = balanced_labels(test.num_classes, n) if labels is None else labels
    if train is not None and (train.class_names != test.class_names or train.images.shape[1:] != test.images.shape[1:]):
        raise UsageError("train and test splits differ in classes or image shape")
    sets = real_sets(test, labels, seed=seed, train=None if train is None else (lambda: train),
                     class_names=test.class_names)
    return RealSplit(ImageDataset(sets.reference, sets.reference_labels, test.class_names, test.name),
                     ImageDataset(sets.stand_in, sets.stand_in_labels, test.class_names, test.name), sets.comparison)


def real_floor(classifier, test: ImageDataset, n: int, *, seed: int = 0, train: ImageDataset | None = None,
               **options) -> QualityReport:
    """The QualityReport of real images vs the reference of ``split_real(test, n, seed=seed, train=train)``.

    The stand-in's true labels play the prompts, so `accuracy` is the classifier's accuracy on real images: the
    ceiling for prompt accuracy. `options` go to ``evaluate`` (n_resamples, level, k_pr, ...).
    """
    split = split_real(test, n, seed=seed, train=train)
    return compute_metrics(split.stand_in.images, split.stand_in.labels, classifier, split.reference.images,
                           clamp=False, comparison=split.comparison, **{"seed": seed, **options})

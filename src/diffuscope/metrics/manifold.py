"""k-nearest-neighbour manifold metrics between real and generated feature sets [N, D].

precision/recall (Kynkaanniemi et al. 2019, k=3): the share of generated samples inside the real manifold (the
union of balls around each real sample reaching its k-th nearest real neighbour), and the share of real samples
inside the generated manifold. density/coverage (Naeem et al. 2020, k=5): how many real balls contain each
generated sample, divided by k and averaged (not capped at 1), and the share of real balls holding at least one
generated sample. Ball membership follows each paper's code: `<=` for precision/recall, `<` for density/coverage.
Distances are Euclidean in float64, computed in row blocks so memory stays O(block x N).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from diffuscope.metrics._blas import one_blas_thread
from diffuscope.metrics.distances import as_features

BLOCK = 1024


def _blocks(a: np.ndarray, b: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """(rows, distances [rows, len(b)]) blocks of the Euclidean distance matrix between a and b."""
    b2 = (b * b).sum(1)
    for start in range(0, len(a), BLOCK):
        rows = slice(start, min(start + BLOCK, len(a)))
        block = a[rows]
        d2 = (block * block).sum(1)[:, None] + b2[None, :] - 2.0 * block @ b.T
        yield rows, np.sqrt(np.clip(d2, 0.0, None))


def knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance from each point to its k-th nearest other point of the same set."""
    if not 1 <= k < len(features):
        raise ValueError(f"k={k} needs at least {k + 1} feature vectors, got {len(features)}")
    radii = np.empty(len(features))
    for rows, d in _blocks(features, features):
        d[np.arange(d.shape[0]), np.arange(rows.start, rows.stop)] = -1.0  # self sorts first, then skipped
        radii[rows] = np.partition(d, k, axis=1)[:, k]
    return radii


def _check(real: Any, fake: Any) -> tuple[np.ndarray, np.ndarray]:
    r, f = as_features(real, "real features"), as_features(fake, "generated features")
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"feature dimensions differ: {r.shape[1]} vs {f.shape[1]}")
    return r, f


@one_blas_thread
def manifold_membership(real: Any, fake: Any, *, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(fake_in_real [N_fake], real_in_fake [N_real]) booleans: whether each generated image lies inside the real
    manifold (some real image's k-NN ball) and each real image inside the generated one (Kynkaanniemi et al. 2019).
    Their means are precision and recall; fake_in_real is per generated image, so precision has a paired form."""
    r, f = _check(real, fake)
    r_radii, f_radii = knn_radii(r, k), knn_radii(f, k)
    fake_in_real = np.zeros(len(f), dtype=bool)
    real_in_fake = np.zeros(len(r), dtype=bool)
    for rows, d in _blocks(r, f):  # d[i, j] = |real_i - fake_j|
        fake_in_real |= (d <= r_radii[rows, None]).any(0)
        real_in_fake[rows] = (d <= f_radii[None, :]).any(1)
    return fake_in_real, real_in_fake


def precision_recall(real: Any, fake: Any, *, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019), k=3 as in the paper."""
    fake_in_real, real_in_fake = manifold_membership(real, fake, k=k)
    return float(fake_in_real.mean()), float(real_in_fake.mean())


@one_blas_thread
def density_coverage(real: Any, fake: Any, *, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020), k=5 as recommended there."""
    r, f = _check(real, fake)
    r_radii = knn_radii(r, k)
    inside = np.zeros(len(f))
    covered = np.zeros(len(r), dtype=bool)
    for rows, d in _blocks(r, f):
        within = d < r_radii[rows, None]
        inside += within.sum(0)
        covered[rows] = d.min(1) < r_radii[rows]
    return float(inside.mean() / k), float(covered.mean())


@dataclass(frozen=True)
class Manifold:
    precision: float
    recall: float
    density: float
    coverage: float


def manifold_metrics(real: Any, fake: Any, *, k_pr: int = 3, k_dc: int = 5) -> Manifold:
    p, r = precision_recall(real, fake, k=k_pr)
    d, c = density_coverage(real, fake, k=k_dc)
    return Manifold(p, r, d, c)

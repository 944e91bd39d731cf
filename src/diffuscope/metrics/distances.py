"""Distances between two feature sets [N, D]: Frechet distance (FD) and kernel inception distance (KID).

Everything is computed in float64 numpy; inputs may be torch tensors or numpy arrays.
Both are biased or noisy at small N: always compare with the real-vs-real floor at the same N (ANCHORS.md).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import linalg

from diffuscope.metrics._blas import one_blas_thread

FD_EPS = 1e-6  # diagonal offset for near-singular covariances (pytorch-fid)


def as_features(x: Any, name: str = "features") -> np.ndarray:
    """A float64 [N, D] array from a torch tensor or array-like; refuses anything else or non-finite values."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be [N, D], got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contain NaN or inf")
    return a


def gaussian_stats(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] (ddof=1) of a feature set of at least 2 rows."""
    f = as_features(features)
    if len(f) < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {len(f)}")
    return f.mean(0), np.cov(f, rowvar=False, ddof=1).reshape(f.shape[1], f.shape[1])


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    """Tr((S1 S2)^(1/2)) with scipy's sqrtm, as pytorch-fid (Seitzer 2020, fid_score.calculate_frechet_distance)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "singular matrix" notices; handled below
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():  # product of near-singular covariances: add eps to the diagonals
            offset = np.eye(len(sigma1)) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):  # rounding leaves tiny imaginary parts; a large one means a real failure
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm produced an imaginary component {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(np.trace(covmean))


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S1 S2)^(1/2)) = Tr((S1^(1/2) S2 S1^(1/2))^(1/2)): two symmetric eigen-decompositions, ~20x faster
    than sqrtm and equal to it up to rounding (S1 S2 is similar to the PSD matrix S1^(1/2) S2 S1^(1/2))."""
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ sigma2 @ root1
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())


@one_blas_thread
def frechet_distance_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *,
                                method: str = "sqrtm", eps: float = FD_EPS) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Frechet 1957; Dowson & Landau 1982; Heusel et al. 2017).

    method  "sqrtm" (scipy.linalg.sqrtm, as pytorch-fid) or "eigh" (symmetric eigen-decompositions; used for the
            bootstrap, where speed matters). May be a tiny negative number (rounding) when the sets coincide.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"mismatched statistics: means {mu1.shape} {mu2.shape}, covariances {sigma1.shape} "
                         f"{sigma2.shape}")
    if method == "sqrtm":
        tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
    elif method == "eigh":
        tr_covmean = _trace_sqrt_product_eigh(sigma1, sigma2)
    else:
        raise ValueError(f"unknown FD method {method!r} (valid: sqrtm, eigh)")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


@one_blas_thread
def frechet_distance(features1: Any, features2: Any, *, method: str = "sqrtm") -> float:
    """FD between the Gaussians fitted to two feature sets [N1, D] and [N2, D]."""
    mu1, s1 = gaussian_stats(features1)
    mu2, s2 = gaussian_stats(features2)
    return frechet_distance_from_stats(mu1, s1, mu2, s2, method=method)


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / D + 1)^3, the KID kernel (Binkowski et al. 2018, Sec. 3)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    """Unbiased MMD^2 from kernel matrices (Gretton et al. 2012, Eq. 3): within-set means skip the diagonal."""
    m, n = len(kxx), len(kyy)
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * kxy.mean())


@one_blas_thread
def kernel_distance(features1: Any, features2: Any, *, num_subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel, averaged over `num_subsets`
    random subsets of `subset_size` drawn without replacement from each set (as in their code, torch-fidelity and
    clean-fid). Returns (mean, std over subsets). When both sets fit in one subset, every subset is the whole set:
    the exact U-statistic is computed once (std 0). Unbiased: its mean is 0 for two samples of one distribution,
    so it can be slightly negative.
    """
    x, y = as_features(features1, "features1"), as_features(features2, "features2")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    m = min(len(x), len(y), subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 feature vectors per set, got {len(x)} and {len(y)}")
    if m == len(x) == len(y):
        return mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)), 0.0
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        a = x[rng.choice(len(x), m, replace=False)]
        b = y[rng.choice(len(y), m, replace=False)]
        values[i] = mmd2_unbiased(polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b))
    return float(values.mean()), float(values.std())

"""The fixed held-out split: which items of each class are kept out of training.

Within each class, the members (in data-set order) are ranked by a splitmix64 hash of (seed, class, position
within the class); the first k of that ranking form the test split. The hash is plain integer arithmetic, so the
split never changes with numpy or torch versions, and train/test are disjoint by construction.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SPLIT_SEED = 20_240_601

_M = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & _M
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M
    return x ^ (x >> np.uint64(31))


def tenth(count: int) -> int:
    """10% of a class, rounded half up, always leaving at least one training item."""
    return min(int(count / 10 + 0.5), max(count - 1, 0))


def held_out_mask(labels: np.ndarray, test_count: Callable[[int], int], seed: int = SPLIT_SEED) -> np.ndarray:
    """Boolean mask over `labels`: True for the held-out items, `test_count(n)` of each class of n items."""
    labels = np.asarray(labels)
    mask = np.zeros(len(labels), dtype=bool)
    with np.errstate(over="ignore"):
        for c in np.unique(labels):
            members = np.flatnonzero(labels == c)
            pos = np.arange(len(members), dtype=np.uint64)
            key = _splitmix64(_splitmix64(np.uint64(seed) ^ (np.uint64(int(c)) << np.uint64(32)) ^ pos))
            order = np.argsort(key, kind="stable")
            mask[members[order[: test_count(len(members))]]] = True
    return mask


def select(mask: np.ndarray, split: str) -> np.ndarray:
    """Indices of the items of `split` ("train", "test" or "all") given the test mask."""
    if split == "all":
        return np.arange(len(mask))
    return np.flatnonzero(mask if split == "test" else ~mask)

"""Training data order as a pure function of (seed, step): a resumed run sees exactly the batches it would have.

The item stream is epoch after epoch of permutations of range(num_items); epoch e's permutation comes from a
torch.Generator seeded with (seed * 1_000_003 + e) mod 2**64. Batch `step` is items [step * B, (step + 1) * B)
of that endless stream, crossing epoch boundaries where it must.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import torch

from diffuscope.checks.errors import UsageError


@lru_cache(maxsize=2)
def epoch_permutation(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of epoch `epoch` (cached: treat as read-only)."""
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**64)
    return torch.randperm(num_items, generator=generator)


def batch_indices(num_items: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """int64 [batch_size]: the item indices of batch `step`."""
    if num_items < 1:
        raise UsageError(f"cannot draw batches from an empty data set (num_items={num_items})")
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {batch_size}")
    if step < 0:
        raise UsageError(f"step must be >= 0, got {step}")
    start, end = step * batch_size, (step + 1) * batch_size
    pieces = []
    for epoch in range(start // num_items, (end - 1) // num_items + 1):
        lo = max(start - epoch * num_items, 0)
        hi = min(end - epoch * num_items, num_items)
        pieces.append(epoch_permutation(num_items, seed, epoch)[lo:hi])
    return torch.cat(pieces)  # a fresh tensor: the cached permutations stay untouched


def iterate_batches(dataset, batch_size: int, seed: int, start_step: int = 0,
                    num_steps: int | None = None) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield (step, images, labels) from `start_step` on, `num_steps` batches (None: forever)."""
    step = start_step
    while num_steps is None or step < start_step + num_steps:
        idx = batch_indices(len(dataset), batch_size, seed, step)
        yield step, dataset.images[idx], dataset.labels[idx]
        step += 1

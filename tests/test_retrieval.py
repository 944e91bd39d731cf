"""Pixel-space retrieval (prompt faithfulness) and colour measures for emoji-like images."""

from __future__ import annotations

import math

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.metrics.retrieval import (
    RetrievalGallery,
    colour_histogram,
    histogram_distance,
    mean_hue,
    retrieval_ceiling,
    retrieval_features,
)

COLOURS = {"red": (1.0, -1.0, -1.0), "green": (-1.0, 1.0, -1.0), "blue": (-1.0, -1.0, 1.0),
           "yellow": (1.0, 1.0, -1.0)}


def square(colour, size: int = 32, lo: int = 8, hi: int = 24) -> torch.Tensor:
    """A coloured square on white, [3, size, size] in [-1, 1]."""
    img = torch.ones(3, size, size)
    img[:, lo:hi, lo:hi] = torch.tensor(colour).view(3, 1, 1)
    return img


@pytest.fixture
def gallery() -> RetrievalGallery:
    images = torch.stack([square(c) for c in COLOURS.values()] + [square(COLOURS["red"], lo=2, hi=10)])
    return RetrievalGallery(images, [f"{n} square" for n in COLOURS] + ["small red square"])


def test_features_are_pixels_at_16():
    f = retrieval_features(torch.stack([square(COLOURS["red"])]))
    assert f.shape == (1, 3 * 16 * 16)
    assert f[0, 0] == 1.0 and f[0, 8 * 16 + 8] == 1.0  # white corner, red centre (R channel)


def test_retrieval_is_colour_sensitive(gallery):
    noisy = torch.stack([square(c) for c in COLOURS.values()]) + 0.1 * torch.randn(4, 3, 32, 32)
    r = gallery.score(noisy, [f"{n} square" for n in COLOURS])
    assert r.top1 == 1.0 and r.ranks.tolist() == [0, 0, 0, 0]
    # a red square drawn for "blue square" is retrieved as the red one: a miss at top-1, rank > 0
    miss = gallery.score(torch.stack([square(COLOURS["red"])]), ["Blue  Square"])
    assert miss.top1 == 0.0 and miss.nearest.tolist() == [0] and miss.ranks.item() >= 1
    assert gallery.score(torch.stack([square(COLOURS["red"])]), torch.tensor([2])).top(5) == 1.0
    with pytest.raises(UsageError, match="no real image"):
        gallery.score(noisy[:1], ["purple square"])


def test_ceiling_counts_ties_against_the_target(gallery):
    assert retrieval_ceiling(gallery).top1 == 1.0
    dup = RetrievalGallery(torch.stack([square(COLOURS["red"])] * 2 + [square(COLOURS["blue"])]), ["a", "b", "c"])
    r = retrieval_ceiling(dup)
    assert r.top1 == pytest.approx(1 / 3) and r.top5 == 1.0 and r.chance_top1 == pytest.approx(1 / 3)


def test_colour_histogram_ignores_background_and_separates_colours():
    red = torch.stack([square(COLOURS["red"])] * 3)
    blue = torch.stack([square(COLOURS["blue"])] * 3)
    h = colour_histogram(red)
    assert h.shape == (512,) and h.sum().item() == pytest.approx(1.0) and h.max().item() == pytest.approx(1.0)
    assert histogram_distance(red, red) == 0.0
    assert histogram_distance(red, blue) == pytest.approx(1.0)
    small = torch.stack([square(COLOURS["red"], lo=12, hi=20)] * 3)  # more white, same colours
    assert histogram_distance(red, small) == pytest.approx(0.0)


def test_mean_hue():
    images = torch.stack([square(COLOURS[c]) for c in ("red", "yellow", "green", "blue")] + [torch.ones(3, 32, 32)])
    hue = mean_hue(images)
    assert hue[:4].tolist() == pytest.approx([0.0, 60.0, 120.0, 240.0], abs=1e-3)
    assert math.isnan(hue[4].item())  # all background

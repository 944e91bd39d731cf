"""Diminishing-returns points on synthetic curves with known answers: EDM's 3% rule, Kneedle on log NFE, plateau."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from diffuscope.metrics import paired_difference_ci
from diffuscope.sweep.config import GREY_LEVEL
from diffuscope.sweep.knee import (
    POWER_FACTOR,
    edm_knee,
    find_knee,
    kneedle_knee,
    needed_n,
    plateau,
    settle,
    tolerance_knee,
    with_spread,
    worst_nfe,
)

NFE = [5, 10, 20, 40, 80, 160]


def test_plateau_at_a_known_point():
    fd = [100.0, 30.0, 10.25, 10.1, 10.0, 10.0]  # best 10.0; 3% above it is 10.3 -> NFE 20 is the first inside
    k = find_knee(NFE, fd, metric="fd")
    assert (k.best_nfe, k.best_value, k.edm_nfe, k.plateaued) == (80, 10.0, 20, True)
    assert k.note == "within 3% of the best from NFE 20"
    assert edm_knee(NFE, [100.0, 30.0, 10.35, 10.1, 10.0, 10.0]) == 40  # 10.35 > 10.3: one point later
    assert edm_knee(NFE, fd, threshold=0.25) == 20 and edm_knee(NFE, fd, threshold=0.5) == 20
    assert edm_knee(NFE, [100.0, 14.0, 10.25, 10.1, 10.0, 10.0], threshold=0.5) == 10  # 14 <= 15: configurable


def test_value_exactly_at_the_bound_counts():
    assert edm_knee([10, 20], [103.0, 100.0]) == 10
    assert edm_knee([10, 20], [97.0, 100.0], higher_is_better=True) == 10


def test_not_plateaued_when_the_last_step_still_improves():
    fd = [100 / x for x in NFE]  # halves with every doubling: never flattens
    k = find_knee(NFE, fd)
    assert k.edm_nfe == 160 and k.best_nfe == 160 and k.plateaued is False
    assert k.last_gain == pytest.approx(1.0)  # 1.25 -> 0.625 is a 100% improvement relative to the best
    assert "not plateaued" in k.note and "100.0%" in k.note
    # the last step gains 2.5% (< 3%): the curve has flattened, the EDM point is the step before
    flat_end = [50.0, 20.0, 12.0, 10.6, 10.25, 10.0]
    assert plateau(NFE, flat_end) == (True, pytest.approx(0.025))
    assert edm_knee(NFE, flat_end) == 80


def test_higher_is_better_metric():
    acc = [0.2, 0.6, 0.9, 0.95, 0.96, 0.96]  # best 0.96; within 3% relative: >= 0.9312 -> 0.95 at NFE 40
    k = find_knee(NFE, acc, metric="accuracy", higher_is_better=True)
    assert (k.best_nfe, k.edm_nfe, k.plateaued) == (80, 40, True)
    assert edm_knee(NFE, acc, higher_is_better=True, threshold=0.07) == 20  # >= 0.8928
    rising = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    k = find_knee(NFE, rising, higher_is_better=True)
    assert k.edm_nfe == 160 and k.plateaued is False and k.last_gain == pytest.approx(0.1 / 0.6)
    # read as lower-is-better, the same curve is best at the first point
    assert edm_knee(NFE, rising) == 5


def test_absolute_tolerance_for_a_curve_that_never_plateaus():
    rmse = [0.2, 0.05, 0.0125, 0.003, 0.0008, 0.0002]  # second order: x4 per doubling, best -> 0
    k = find_knee(NFE, rmse, metric="conv_pixel", tolerance=GREY_LEVEL)
    assert k.plateaued is False  # relative to a best that tends to 0, every step still "improves"
    assert k.tolerance_nfe == 40 == tolerance_knee(NFE, rmse, 2 / 255)  # 0.003 <= 0.00784 < 0.0125
    assert "at or below 0.007843 from NFE 40" in k.note
    first_order = [0.4, 0.2, 0.1, 0.05, 0.025, 0.0125]
    k = find_knee(NFE, first_order, tolerance=GREY_LEVEL)
    assert k.tolerance_nfe is None and "never at or below" in k.note
    assert tolerance_knee(NFE, rmse, 0.0125) == 20  # a value equal to the tolerance counts
    assert find_knee(NFE, rmse).tolerance_nfe is None and "at or below" not in find_knee(NFE, rmse).note
    with pytest.raises(ValueError, match="lower-is-better"):
        find_knee(NFE, rmse, higher_is_better=True, tolerance=0.1)


SETTLE_NFE = [2, 5, 10, 20, 40, 80]
MEANS = [10.0, 6.0, 3.0, 3.0, 3.0, 3.0]  # best 3.0 from NFE 10 on; band 3% of 3 = 0.09


def _noise(rng, n: int, scale: float) -> np.ndarray:
    """Per-image noise in quarter units whose sum is exactly 0 (+x and -x pairs), so every cell's mean is exact."""
    half = rng.integers(-4, 5, n // 2) * scale / 4
    return rng.permutation(np.concatenate([half, -half, np.zeros(n % 2)]))


def _cells(n: int, scale: float, seed: int = 0) -> dict[int, np.ndarray]:
    """Per-image values (image i from seed i in every cell) with the exact means MEANS; scale 0: the cells from
    NFE 10 on equal each other image by image."""
    rng = np.random.default_rng(seed)
    return {x: m + _noise(rng, n, scale) for x, m in zip(SETTLE_NFE, MEANS)}


def _settled(cells: dict[int, np.ndarray], higher_is_better: bool = False):
    n = len(cells[SETTLE_NFE[0]])
    knee = find_knee(list(cells), [float(v.mean()) for v in cells.values()], metric="fd",
                     higher_is_better=higher_is_better)

    def gap(x):  # value(x) - value(best cell), the paired bootstrap the sweep uses for per-image means
        iv = paired_difference_ci(np.mean, cells[x], cells[knee.against_nfe], n_resamples=1000, seed=0)
        return iv.estimate, iv.low, iv.high

    return settle(knee, gap, n)


def test_a_curve_equal_to_the_best_image_by_image_settles_at_its_first_such_count():
    k = _settled(_cells(16, 0.0))  # (a): NFE 10, 20, 40, 80 are the same images, values for value
    assert (k.best_nfe, k.against_nfe, k.band) == (10, 80, pytest.approx(0.09))  # ties: compared with the most NFE
    assert (k.settled, k.settled_nfe, k.settle_gap, k.needed_n) == (True, 10, (0.0, 0.0, 0.0), None)
    assert "settled at NFE 10: NFE 10 vs the best (NFE 80) +0 [+0, +0] (paired 95%) lies inside +-0.09" in k.note
    d = json.loads(json.dumps(k.to_dict(), allow_nan=False))
    assert (d["settled_nfe"], d["settle_gap"], d["n"], d["band"]) == (10, [0.0, 0.0, 0.0], 16, pytest.approx(0.09))
    acc = _settled({x: 1 - v / 10 for x, v in _cells(16, 0.0).items()}, higher_is_better=True)
    assert (acc.settled_nfe, acc.against_nfe) == (10, 80)  # higher is better: the same rule


def test_a_noisy_curve_is_not_settled_and_the_n_it_names_settles_it():
    k = _settled(_cells(16, 0.5))  # (b): the same means, per-image noise far wider than the band at n = 16
    assert [float(v.mean()) for v in _cells(16, 0.5).values()] == MEANS
    assert k.settled is False and k.settled_nfe is None and k.settle_nfe == 10  # the smallest candidate
    est, lo, hi = k.settle_gap
    assert lo < -0.09 or hi > 0.09
    assert k.needed_n == math.ceil(16 * ((hi - lo) / 2 / (0.09 - abs(est))) ** 2 * POWER_FACTOR) > 16
    assert f"not settled at n = 16: NFE 10 vs the best (NFE 80) {est:+.4g}" in k.note
    assert f"reaches outside +-0.09; n = {k.needed_n} would settle it" in k.note
    again = _settled(_cells(k.needed_n, 0.5, seed=1))  # drawn the same way, at the n it named
    assert (again.settled, again.settled_nfe) == (True, 10)


def test_no_settled_point_at_the_largest_count_run():
    # (c): the best at the largest count and everything else far outside the band: no candidate at all
    rng = np.random.default_rng(0)
    falling = {x: 100 / x + _noise(rng, 16, 0.01) for x in SETTLE_NFE}
    k = _settled(falling)
    assert (k.plateaued, k.settled, k.settled_nfe, k.settle_nfe, k.needed_n) == (False, False, None, None, None)
    # only the last two counts equal: compared with 80, settled at 40, never at 80 itself
    two = {x: v if x < 40 else falling[80] for x, v in falling.items()}
    assert _settled(two).settled_nfe == 40
    one = settle(find_knee([80], [3.0]), lambda x: (0.0, 0.0, 0.0), 16)
    assert one.settled is None and one.settled_nfe is None  # one point: nothing below the best
    # the best in the middle and the count below it outside the band: nothing settles, no n would
    middle = find_knee([10, 20, 40], [4.0, 3.0, 3.05])
    k = settle(middle, lambda x: pytest.fail(f"no candidate to measure, asked for {x}"), 16)
    assert (k.against_nfe, k.settled, k.settle_nfe) == (20, False, None)
    assert "not settled at n = 16: no fewer NFE than 20 come within +-0.09" in k.note


def test_settle_needs_a_paired_interval_and_sizes_n_only_inside_the_band():
    knee = find_knee(SETTLE_NFE, MEANS)
    assert settle(knee, None, 16).settled is None  # KID, recall, no resamples: not measured
    assert settle(knee, lambda x: None, 16).settled is None
    assert needed_n(16, (0.03, -0.07, 0.13), 0.09) == math.ceil(16 * (0.1 / 0.06) ** 2 * POWER_FACTOR)
    assert needed_n(16, (0.09, 0.0, 0.2), 0.09) is None  # the estimate itself at the band's edge: no n settles it
    assert needed_n(16, (0.0, -0.01, 0.2), 0.09) > 16  # never fewer than measured


def test_a_curve_separates_only_when_its_worst_cell_is_clearly_worse_than_its_best():
    fd = [6.2, 5.0, 3.6, 3.7, 4.3, 4.4]
    knee = find_knee(NFE, fd)
    assert worst_nfe(knee) == 5
    clear = with_spread(knee, (2.6, 1.1, 3.9))  # value(5) - best, paired: above 0
    assert (clear.worst_nfe, clear.separated, clear.spread) == (5, True, (2.6, 1.1, 3.9))
    assert with_spread(knee, (2.6, -0.1, 3.9)).separated is False  # the interval includes 0: noise
    assert json.loads(json.dumps(clear.to_dict()))["spread"] == [2.6, 1.1, 3.9]
    # no paired form (KID, precision, recall): the two cells' own 95% intervals must not overlap
    assert with_spread(knee, None, ((5.5, 7.0), (3.0, 4.1))).separated is True
    assert with_spread(knee, None, ((4.0, 7.0), (3.0, 4.1))).separated is False
    assert with_spread(knee, None, None).separated is None  # no intervals: cannot say
    acc = find_knee(NFE, [0.5, 0.8, 0.97, 0.98, 0.98, 0.98], higher_is_better=True)  # worse is lower
    assert worst_nfe(acc) == 5 and with_spread(acc, (-0.48, -0.6, -0.3)).separated is True
    assert with_spread(acc, (-0.48, -0.6, 0.02)).separated is False
    flat = find_knee(NFE, [1.0] * 6, higher_is_better=True)  # identical values: nothing to resolve
    assert with_spread(flat, None).separated is False
    one = find_knee([10], [3.0])
    assert with_spread(one, (0.1, 0.0, 0.2)).separated is None  # one point: no spread


def test_a_metric_that_gets_worse_with_more_steps_has_plateaued():
    fd = [50.0, 12.0, 10.0, 10.5, 11.0, 11.5]  # best in the middle (as DDIM-1000 vs DDPM in ANCHORS.md)
    k = find_knee(NFE, fd)
    assert (k.best_nfe, k.edm_nfe, k.plateaued) == (20, 20, True)
    assert k.last_gain < 0


def test_kneedle_finds_the_corner_on_log_nfe():
    nfe = [4, 8, 16, 32, 64, 128, 256, 512]
    corner = [max(0.0, 5 - math.log2(x / 4)) * 10 + 1 for x in nfe]  # linear in log2 NFE down to 128, then flat
    assert kneedle_knee(nfe, corner) == 128
    assert kneedle_knee(nfe, [100 - v for v in corner], higher_is_better=True) == 128
    # an exponential approach to 10 on log-spaced NFE: the bend sits where exp(-NFE/8) stops mattering
    nfe2 = [5, 8, 12, 18, 28, 42, 65, 100]
    assert kneedle_knee(nfe2, [10 + 200 * math.exp(-x / 8) for x in nfe2]) == 18
    assert kneedle_knee(nfe[:2], corner[:2]) is None  # fewer than 3 points
    assert kneedle_knee(nfe, [1.0] * len(nfe)) is None  # flat


def test_non_finite_values_are_skipped_and_order_does_not_matter():
    k = find_knee([40, 5, 20, 10], [10.0, float("nan"), 10.2, 30.0])
    assert k.nfe == (10, 20, 40) and k.edm_nfe == 20
    assert find_knee([10], [float("nan")]).best_nfe is None
    one = find_knee([10], [3.0])
    assert one.edm_nfe == 10 and one.plateaued is None and "one point" in one.note


def test_bad_curves_are_refused():
    with pytest.raises(ValueError, match="NFE values"):
        find_knee([1, 2], [1.0])
    with pytest.raises(ValueError, match="repeated"):
        find_knee([2, 2], [1.0, 2.0])
    with pytest.raises(ValueError, match="threshold"):
        find_knee([1, 2], [1.0, 2.0], threshold=0)


def test_knee_to_dict_is_json_ready():
    k = find_knee(NFE, [100 / x for x in NFE], metric="fd", caveat="stochastic sampler")
    d = json.loads(json.dumps(k.to_dict(), allow_nan=False))
    assert d["edm_nfe"] == 160 and d["plateaued"] is False and d["note"].startswith("stochastic sampler; not")

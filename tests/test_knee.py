"""Diminishing-returns points on synthetic curves with known answers: EDM's 3% rule, Kneedle on log NFE, plateau."""

from __future__ import annotations

import json
import math

import pytest

from diffuscope.sweep.config import GREY_LEVEL
from diffuscope.sweep.knee import (
    edm_knee,
    find_knee,
    gap_nfe,
    kneedle_knee,
    plateau,
    tolerance_knee,
    with_gap,
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


def test_a_knee_is_resolved_only_when_the_step_below_it_is_clearly_worse():
    fd = [6.2, 5.0, 3.6, 3.7, 4.3, 4.4]  # best 3.6 at NFE 20; the EDM point is 20, the cell below it NFE 10
    knee = find_knee(NFE, fd)
    assert (knee.edm_nfe, gap_nfe(knee)) == (20, 10)
    clear = with_gap(knee, (1.4, 0.6, 2.1))  # value(10) - best, paired 95% interval above 0: worse
    assert clear.resolved is True and clear.gap_nfe == 10 and "resolved" in clear.note and "not" not in clear.note
    unclear = with_gap(knee, (1.4, -0.2, 3.0))  # the interval includes 0
    assert unclear.resolved is False and "not resolved" in unclear.note and "[-0.2, +3]" in unclear.note
    assert with_gap(knee, None).resolved is None
    assert json.loads(json.dumps(unclear.to_dict()))["gap"] == [1.4, -0.2, 3.0]
    acc = find_knee(NFE, [0.5, 0.8, 0.97, 0.98, 0.98, 0.98], higher_is_better=True)  # higher is better: below 0
    assert with_gap(acc, (-0.18, -0.25, -0.11)).resolved is True
    assert with_gap(acc, (-0.18, -0.25, 0.01)).resolved is False
    first = find_knee(NFE, [1.0, 1.01, 1.0, 1.0, 1.0, 1.0])  # the EDM point is the fewest NFE: nothing below it
    assert gap_nfe(first) is None and with_gap(first, (0.1, 0.0, 0.2)).resolved is None


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

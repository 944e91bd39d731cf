"""The diminishing-returns point of a quality-vs-NFE curve: the settled point (the rule), EDM's point estimate and
Kneedle beside it, and whether the curve has plateaued at all.

EDM's rule (Karras et al. 2022, Fig. 2): the fewest NFE whose value is within ``threshold`` (3%) of the best value
observed, relative to the best: ``|v - best| <= threshold * |best|``. For lower-is-better metrics (FD) that is
``v <= best * (1 + t)``; for higher-is-better ones (accuracy) ``v >= best * (1 - t)``.

Kneedle (Satopaa et al. 2011, via the ``kneed`` package) on log NFE: the point of maximum curvature of the
normalised curve; "convex, decreasing" for lower-is-better metrics, "concave, increasing" for higher-is-better.
Kneedle always finds a bend in a convex curve, even one still falling steadily, so it is reported beside the EDM
point and never instead of it.

Good enough in absolute terms: for a metric with a natural tolerance (the convergence RMSE in pixels, whose best
value tends to 0 so that a relative rule never settles), the fewest NFE whose value is at or below it; for pixels,
one 8-bit grey level (2/255 in [-1, 1] units): from there on, more steps change nothing a saved PNG can show.

Settled (issue 32): the diminishing-returns point that measurement can settle. In the lesson's words: the fewest
steps that are, beyond sampling noise, as good as the best count (within the stated ``threshold``) -- "more steps
stop paying off here, and n images are enough to say so". The statistic: the smallest NFE s, below the best cell
(the most NFE among equal best values), whose paired 95% interval of value(s) - best (image i from seed i in both
cells, one resample of image indices serves both) lies entirely inside +-band, band = threshold * |best|: an
equivalence test (the interval form of Schuirmann's two one-sided tests, 1987; 95% is the cautious level). Only
cells whose own value is within the band are tried (EDM's point is the first of them). None settles: "not settled
at n = N", and the n that would settle the smallest candidate, from its half-width scaling as 1/sqrt(n):
n' = n (half / (band - |estimate|))^2 x POWER_FACTOR (an 80% chance, not a coin flip); none when |estimate| >=
band. The best cell itself, and so the largest count run, is never a settled point.

Separated: whether the curve shows anything beyond sampling noise at this n. The worst cell is compared with the
best one, paired where the metric has a paired form (FD, accuracy, precision, convergence), else by the two cells'
own 95% intervals not overlapping (KID; recall has no interval, so it is never folded); a metric that separates no
two cells for any sampler resolves nothing at this n, and the reports fold it away with a note instead of plotting
a flat line inside the noise.

Not plateaued: the EDM point is the largest NFE tested, i.e. the best value is at the largest NFE and the last
step still improved the metric by more than the threshold. The range tested did not reach diminishing returns,
and a larger step count may still pay off.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Knee:
    """The diminishing-returns analysis of one metric for one sampler."""

    metric: str
    higher_is_better: bool
    threshold: float
    nfe: tuple[int, ...]  # ascending, finite values only
    values: tuple[float, ...]
    best_nfe: int | None
    best_value: float | None
    edm_nfe: int | None  # EDM's rule: the fewest NFE within threshold of the best
    kneedle_nfe: int | None  # Kneedle on log NFE (None: fewer than 3 points or no knee)
    plateaued: bool | None  # None: fewer than 2 points
    last_gain: float | None  # relative improvement of the last step over the one before (positive = better)
    tolerance: float | None = None  # an absolute good-enough value (lower is better), if the metric has one
    tolerance_nfe: int | None = None  # the fewest NFE at or below ``tolerance`` (None: never, or no tolerance)
    against_nfe: int | None = None  # the best cell the settle rule compares with (the most NFE among ties)
    settled_nfe: int | None = None  # the settled diminishing-returns point (None: not settled or not measured)
    settle_nfe: int | None = None  # whose interval settle_gap is: settled_nfe, else the smallest candidate
    settle_gap: tuple[float, float, float] | None = None  # value(settle_nfe) - best, paired 95% (est, low, high)
    settled: bool | None = None  # None: no paired interval (KID, recall, no resamples) or one point
    needed_n: int | None = None  # images per cell that would settle settle_nfe (only when not settled)
    n: int | None = None  # images per cell behind the intervals
    worst_nfe: int | None = None  # the tested NFE with the worst value
    spread: tuple[float, float, float] | None = None  # value(worst_nfe) - best, paired 95% (None: no paired form)
    separated: bool | None = None  # the worst cell is measurably worse than the best (None: no intervals)
    caveat: str = ""  # why the numbers may not mean what they seem (e.g. a stochastic sampler's convergence)

    @property
    def note(self) -> str:
        return f"{self.caveat}; {self._note()}" if self.caveat else self._note()

    def _note(self) -> str:
        if self.best_nfe is None:
            return "no values"
        if self.plateaued is None:
            note = "one point: no trend"
        elif not self.plateaued:
            note = (f"not plateaued within the tested range: the last step still improves by "
                    f"{100 * (self.last_gain or 0):.1f}% (> {100 * self.threshold:g}%); try more steps")
        else:
            note = f"within {100 * self.threshold:g}% of the best from NFE {self.edm_nfe}"
        note += self._settle_note()
        if self.tolerance is None:
            return note
        if self.tolerance_nfe is None:
            return f"{note}; never at or below {self.tolerance:.4g} in the tested range"
        return f"{note}; at or below {self.tolerance:.4g} from NFE {self.tolerance_nfe}"

    @property
    def band(self) -> float | None:
        """The tolerance band around the best value, in the metric's units: threshold * |best|."""
        return None if self.best_value is None else self.threshold * abs(self.best_value)

    def _settle_note(self) -> str:
        if self.settled is None or self.plateaued is False:
            return ""
        band = f"+-{self.band:.4g}"
        if self.settle_gap is None and self.against_nfe == self.nfe[0]:
            return f"; not settled at n = {self.n}: the best is the fewest NFE run ({self.against_nfe})"
        if self.settle_gap is None:
            return f"; not settled at n = {self.n}: no fewer NFE than {self.against_nfe} come within {band}"
        est, lo, hi = self.settle_gap
        where = (f"NFE {self.settle_nfe} vs the best (NFE {self.against_nfe}) {est:+.4g} [{lo:+.4g}, {hi:+.4g}] "
                 f"(paired 95%)")
        if self.settled:
            return f"; settled at NFE {self.settled_nfe}: {where} lies inside {band}"
        need = f"n = {self.needed_n} would settle it" if self.needed_n else "no n would settle it"
        return f"; not settled at n = {self.n}: {where} reaches outside {band}; {need}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["nfe"], d["values"] = list(self.nfe), [_finite(v) for v in self.values]
        d["best_value"], d["last_gain"] = _finite(self.best_value), _finite(self.last_gain)
        d["settle_gap"] = None if self.settle_gap is None else [float(v) for v in self.settle_gap]
        d["band"] = _finite(self.band)
        d["spread"] = None if self.spread is None else [float(v) for v in self.spread]
        d["note"] = self.note
        return d


def _finite(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _clean(nfe: Sequence[float], values: Sequence[float]) -> tuple[list[int], list[float]]:
    """Finite (nfe, value) pairs sorted by NFE; refuses mismatched lengths, non-positive or repeated NFE."""
    if len(nfe) != len(values):
        raise ValueError(f"{len(nfe)} NFE values for {len(values)} metric values")
    pairs = sorted((int(x), float(v)) for x, v in zip(nfe, values) if v is not None and math.isfinite(float(v)))
    xs = [x for x, _ in pairs]
    if any(x < 1 for x in xs):
        raise ValueError(f"NFE must be positive, got {xs}")
    if len(set(xs)) != len(xs):
        raise ValueError(f"repeated NFE values {xs}: one value per NFE")
    return xs, [v for _, v in pairs]


def best_index(values: Sequence[float], higher_is_better: bool = False) -> int:
    """Index of the best value (the first one on ties: the cheapest)."""
    pick = max if higher_is_better else min
    best = pick(values)
    return next(i for i, v in enumerate(values) if v == best)


def within(value: float, best: float, threshold: float) -> bool:
    """|value - best| <= threshold * |best| (a hair of float slack, so a value equal to the bound counts)."""
    return abs(value - best) <= threshold * abs(best) * (1 + 1e-12) + 1e-300


def edm_knee(nfe: Sequence[float], values: Sequence[float], *, higher_is_better: bool = False,
             threshold: float = 0.03) -> int | None:
    """EDM's rule: the fewest NFE whose value is within ``threshold`` (relative) of the best observed value.
    Non-finite values are skipped; None when there are none."""
    xs, vs = _clean(nfe, values)
    if not vs:
        return None
    best = vs[best_index(vs, higher_is_better)]
    return next(x for x, v in zip(xs, vs) if within(v, best, threshold))


def kneedle_knee(nfe: Sequence[float], values: Sequence[float], *, higher_is_better: bool = False,
                 sensitivity: float = 1.0) -> int | None:
    """Kneedle on log NFE (``kneed.KneeLocator``): the tested NFE at the knee, or None (fewer than 3 points,
    a flat curve, or no knee found)."""
    xs, vs = _clean(nfe, values)
    if len(xs) < 3 or max(vs) == min(vs):
        return None
    from kneed import KneeLocator

    log_x = [math.log(x) for x in xs]
    curve, direction = ("concave", "increasing") if higher_is_better else ("convex", "decreasing")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no knee/elbow found"
        knee = KneeLocator(log_x, vs, S=sensitivity, curve=curve, direction=direction).knee
    if knee is None:
        return None
    return xs[min(range(len(xs)), key=lambda i: abs(log_x[i] - float(knee)))]


def plateau(nfe: Sequence[float], values: Sequence[float], *, higher_is_better: bool = False,
            threshold: float = 0.03) -> tuple[bool | None, float | None]:
    """(plateaued, last_gain). last_gain is the last step's relative improvement, (v[-2] - v[-1]) / |v[-1]| for
    lower-is-better (sign flipped for higher-is-better); plateaued is False when EDM's point is the largest NFE
    (the best value is at the end and the last step gained more than the threshold). None with < 2 points."""
    xs, vs = _clean(nfe, values)
    if len(vs) < 2:
        return None, None
    gain = (vs[-2] - vs[-1]) if not higher_is_better else (vs[-1] - vs[-2])
    last_gain = gain / abs(vs[-1]) if vs[-1] != 0 else (math.inf if gain > 0 else 0.0 if gain == 0 else -math.inf)
    knee = edm_knee(xs, vs, higher_is_better=higher_is_better, threshold=threshold)
    return knee != xs[-1], last_gain


POWER_FACTOR = ((1.96 + 0.84) / 1.96) ** 2  # sizes n for an 80% chance that the 95% interval settles


def last_best_nfe(nfe: Sequence[int], values: Sequence[float], higher_is_better: bool = False) -> int | None:
    """The most NFE among the cells with the best value (the cell the settle rule compares with)."""
    if not values:
        return None
    best = values[best_index(values, higher_is_better)]
    return max(x for x, v in zip(nfe, values) if v == best)


def settle_candidates(knee: Knee) -> list[int]:
    """NFE below the best cell whose own value is within the band: the only ones whose interval can settle."""
    if knee.against_nfe is None or knee.best_value is None:
        return []
    return [x for x, v in zip(knee.nfe, knee.values)
            if x < knee.against_nfe and within(v, knee.best_value, knee.threshold)]


def inside(interval: tuple[float, float, float], band: float) -> bool:
    """Whether a 95% interval of value - best lies entirely inside +-band (the hair of slack of ``within``)."""
    _, lo, hi = interval
    slack = band * (1 + 1e-12) + 1e-300
    return -slack <= lo and hi <= slack


def needed_n(n: int, interval: tuple[float, float, float], band: float) -> int | None:
    """Images per cell that would settle a paired difference measured as (estimate, low, high) at ``n``: the
    half-width shrinks as 1/sqrt(n), so n' = n (half / (band - |estimate|))^2 x POWER_FACTOR, at least n + 1.
    None when |estimate| >= band (no n settles it) or the interval is not finite."""
    est, lo, hi = interval
    room = band - abs(est)
    if room <= 0 or not all(map(math.isfinite, (est, lo, hi))):
        return None
    return max(math.ceil(n * ((hi - lo) / 2 / room) ** 2 * POWER_FACTOR), n + 1)


def settle(knee: Knee, gap: Callable[[int], tuple[float, float, float] | None] | None, n: int) -> Knee:
    """``knee`` with the settle rule applied (module notes): ``gap(nfe)`` is the paired 95% interval of
    value(nfe) - value(against_nfe), from the same noise; None: the metric has no paired interval."""
    knee = replace(knee, n=n)
    if gap is None or knee.against_nfe is None or len(knee.nfe) < 2:
        return knee
    first = None
    for x in settle_candidates(knee):
        iv = gap(x)
        if iv is None:
            return knee
        iv = tuple(float(v) for v in iv)
        if inside(iv, knee.band):
            return replace(knee, settled=True, settled_nfe=x, settle_nfe=x, settle_gap=iv)
        first = first or (x, iv)
    if first is None:
        return replace(knee, settled=False)
    return replace(knee, settled=False, settle_nfe=first[0], settle_gap=first[1],
                   needed_n=needed_n(n, first[1], knee.band))


def worst_nfe(knee: Knee) -> int | None:
    """The tested NFE with the worst value (the first on ties); None without values."""
    if not knee.values:
        return None
    pick = min if knee.higher_is_better else max
    return knee.nfe[knee.values.index(pick(knee.values))]


def worse_side(interval: tuple[float, float, float], higher_is_better: bool) -> bool:
    """Whether a paired 95% interval of value - best lies entirely on the worse side of 0."""
    _, lo, hi = interval
    return hi < 0 if higher_is_better else lo > 0


def with_spread(knee: Knee, interval: tuple[float, float, float] | None = None,
                cell_intervals: tuple[tuple[float, float], tuple[float, float]] | None = None) -> Knee:
    """``knee`` with whether its worst cell is measurably worse than its best: from the paired interval of
    value(worst) - best when the metric has one, else from the (worst, best) cells' own intervals not overlapping."""
    nfe = worst_nfe(knee)
    if len(knee.values) < 2:
        return replace(knee, worst_nfe=nfe)
    if nfe == knee.best_nfe:  # every value equal
        return replace(knee, worst_nfe=nfe, separated=False)
    if interval is not None:
        iv = tuple(float(v) for v in interval)
        return replace(knee, worst_nfe=nfe, spread=iv, separated=worse_side(iv, knee.higher_is_better))
    if cell_intervals is not None:
        (w_lo, w_hi), (b_lo, b_hi) = cell_intervals
        return replace(knee, worst_nfe=nfe, separated=w_hi < b_lo or b_hi < w_lo)
    return replace(knee, worst_nfe=nfe)


def tolerance_knee(nfe: Sequence[float], values: Sequence[float], tolerance: float) -> int | None:
    """The fewest NFE whose (lower-is-better) value is at or below ``tolerance``; None if none is."""
    xs, vs = _clean(nfe, values)
    return next((x for x, v in zip(xs, vs) if v <= tolerance), None)


def find_knee(nfe: Sequence[float], values: Sequence[float], *, metric: str = "", higher_is_better: bool = False,
              threshold: float = 0.03, tolerance: float | None = None, caveat: str = "") -> Knee:
    """Every diminishing-returns number for one curve (``tolerance``: see the module notes)."""
    if tolerance is not None and higher_is_better:
        raise ValueError("an absolute tolerance is for lower-is-better metrics")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    xs, vs = _clean(nfe, values)
    opts = {"higher_is_better": higher_is_better}
    b = best_index(vs, higher_is_better) if vs else None
    plateaued, last_gain = plateau(xs, vs, threshold=threshold, **opts)
    return Knee(
        metric=metric, higher_is_better=higher_is_better, threshold=threshold, nfe=tuple(xs), values=tuple(vs),
        best_nfe=None if b is None else xs[b], best_value=None if b is None else vs[b],
        edm_nfe=edm_knee(xs, vs, threshold=threshold, **opts), kneedle_nfe=kneedle_knee(xs, vs, **opts),
        plateaued=plateaued, last_gain=last_gain, tolerance=tolerance,
        against_nfe=last_best_nfe(xs, vs, higher_is_better),
        tolerance_nfe=None if tolerance is None else tolerance_knee(xs, vs, tolerance), caveat=caveat)

"""The exercise's answer in two layers per sampler: a headline in the lesson's words, then the measured detail.

    answers = sampler_answers(result)       # [Answer(sampler, headline, detail, ...), ...] in the sweep's order
    answers[0].headline   # "To the eye, 10 steps already look like 100 here (at most 2 grey levels apart); the
                          #  picture breaks below 5 steps; pixels stop changing after 25 (iPNDM)."
    answers[0].detail     # the statistics behind it: RMSE per step count, the quality metric, its intervals

The headline answers the lesson's question ("where do more steps stop paying off?") from what the sweep measured
best: the pixel distance of every step count to the fine-step reference made from the same noise
(``conv_pixel``, an RMSE in [-1, 1] units; one 8-bit grey level is ``GREY_LEVEL`` = 2/255):

- *to the eye*: the fewest steps whose picture is at most ``EYE_LEVELS`` grey levels (RMSE) from the largest count
  run. Only distances to the reference are measured, so the distance between two counts is bounded by the triangle
  inequality, RMSE(a, b) <= RMSE(a, ref) + RMSE(b, ref), and the headline says "at most";
- *the picture breaks*: below the fewest steps from which no count run is more than ``BROKEN_LEVELS`` grey levels
  from the reference;
- *pixels stop changing*: from the first count within one grey level of the reference (knee.py's tolerance
  point). Nothing beyond the largest count run was measured, so a point at (or not before) it is never called a
  plateau: the headline says "still changing at 100, the largest count run".

A stochastic sampler draws fresh noise at every step and does not converge to the deterministic reference, so its
headline says so instead of pixel claims. Quality (the first quality metric measured: FD, else accuracy) enters
the headline as a diminishing-returns claim only when it is settled (knee.py): the fewest steps whose paired 95%
interval against the best count lies inside the stated tolerance (``--threshold``, 3% of the best: about 3 points
of accuracy near 100%). Never at the largest count run. Where nothing settles, the headline says "not settled at
n = 16: 70 images per step count would settle it" (``needed_n`` from the measured interval); the detail holds the
interval. The page (``diffuscope serve``), the demo report and the sweep's report.md all print these two layers,
and quality.png labels its curves with ``curve_label``, so they agree.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from diffuscope.sweep.config import GREY_LEVEL

QUALITY_METRICS = {"fd": "FD", "accuracy": "accuracy vs prompt"}  # the first one measured answers "quality"
EYE_LEVELS = 4.0  # grey levels (RMSE) below which two pictures side by side look alike
BROKEN_LEVELS = 16.0  # grey levels (RMSE) from the reference beyond which the picture is broken (blur, wrong shapes)


@dataclass(frozen=True)
class Answer:
    """One sampler's answer: ``headline`` (one plain sentence, no intervals) and ``detail`` (the statistics)."""

    sampler: str
    headline: str
    detail: str
    largest: int | None = None  # the largest step count run
    eye_steps: int | None = None  # the fewest steps that look like the largest count to the eye
    broken_below: int | None = None  # the picture breaks below this many steps (None: no count run breaks it)
    settled_steps: int | None = None  # pixels stop changing after this (None: still changing at the largest)
    quality_steps: int | None = None  # settled quality point (None: not settled or not measured)
    needed_n: int | None = None  # images per cell that would settle the quality point

    @property
    def text(self) -> str:
        return f"{self.headline} {self.detail}".strip()

    def to_dict(self) -> dict:
        return asdict(self)


def levels(rmse: float) -> float:
    """An RMSE in [-1, 1] units as 8-bit grey levels."""
    return rmse / GREY_LEVEL


def _steps_at(result, sampler: str, nfe: int | None) -> int | None:
    return next((c.steps for c in result.cells if c.sampler == sampler and c.nfe == nfe), None)


def _interval(gap) -> str:
    est, lo, hi = gap
    return f"{est:+.3g} [{lo:+.3g}, {hi:+.3g}]"


def _pixel_curve(result, sampler: str, conv) -> list[tuple[int, float]]:
    """(steps, grey levels to the reference), ascending steps."""
    pairs = [(_steps_at(result, sampler, x), levels(v)) for x, v in zip(conv.nfe, conv.values)]
    return sorted((s, v) for s, v in pairs if s is not None)


def _band(quality) -> str:
    """The tolerance band in the metric's units (accuracy in points)."""
    if quality.metric == "accuracy":
        return f"+-{100 * quality.band:.2g} points"
    return f"+-{quality.band:.3g}"


def _quality(result, sampler: str, quality, n: int) -> tuple[str, str, int | None, int | None]:
    """(headline clause or "", detail sentence, settled quality point, needed n)."""
    label = QUALITY_METRICS[quality.metric]
    pct = f"{100 * quality.threshold:g}%"
    largest = max(c.steps for c in result.cells if c.sampler == sampler)
    if quality.plateaued is None:
        return "", f"{label} was measured at one step count only: no trend.", None, None
    best = _steps_at(result, sampler, quality.against_nfe)
    if quality.settled:
        steps = _steps_at(result, sampler, quality.settled_nfe)
        return (f"quality ({label}) is within {pct} of its best from {steps} steps",
                f"{label} at {steps} steps vs the best ({best} steps): {_interval(quality.settle_gap)}, paired "
                f"95%, inside the {pct} band ({_band(quality)}): settled at n = {n}.", steps, None)
    if not quality.plateaued:
        return (f"quality ({label}) still improves at {largest}, the largest count run",
                f"{label} still improves by more than {pct} at {largest} steps, the largest count run.", None, None)
    edm = _steps_at(result, sampler, quality.edm_nfe)
    if quality.settled is None:
        return "", f"{label} is within {pct} of the best from {edm} steps (no paired interval, so not settled).", \
            None, None
    need = quality.needed_n
    clause = (f"where quality ({label}) stops improving is not settled at n = {n}"
              + (f": {need} images per step count would settle it" if need else ""))
    if quality.settle_gap is None:
        return clause, (f"{label} is best at {best} steps and no fewer steps come within {pct} of it: not settled "
                        f"at n = {n}."), None, None
    cand = _steps_at(result, sampler, quality.settle_nfe)
    tail = f"n = {need} would settle it." if need else "no n would settle it."
    return clause, (f"{label} is within {pct} of the best from {edm} steps by its mean, but {cand} steps vs the "
                    f"best ({best} steps) is {_interval(quality.settle_gap)}, paired 95%, reaching outside the "
                    f"{pct} band ({_band(quality)}): not settled at n = {n}; {tail}"), None, need


def _other_model(result, row: str) -> str | None:
    """The reference model's name when ``row`` belongs to another model of a side-by-side sweep (series.py: the
    first model is the reference), else None."""
    ref = result.reference if isinstance(getattr(result, "reference", None), dict) else {}
    owner = next((m.get("name") for m in getattr(result, "models", None) or [] if row in m.get("rows", ())), None)
    return ref["model"] if ref.get("model") and owner is not None and owner != ref["model"] else None


def _against(result, row: str) -> str:
    """What a row's convergence is measured against: "the 200-step Heun reference"; in a side-by-side sweep, for a
    row of a model other than the reference model, "mnist's converged images (200-step Heun)"."""
    ref = result.reference if isinstance(getattr(result, "reference", None), dict) else {}
    run = f"{ref['steps']}-step {ref['sampler']}" if {"steps", "sampler"} <= set(ref) else None
    other = _other_model(result, row)
    if other is not None:
        return f"{other}'s converged images" + (f" ({run})" if run else "")
    return f"the {run} reference" if run else "the fine-step reference"


def _nearness(result, sampler: str, curve: list[tuple[int, float]], other: str) -> str:
    """The headline's pixel clause for another model's row: its pictures are not the reference model's own, so
    "broken" and "still changing" do not apply; how near it comes to the reference model's pictures does."""
    steps, levels = min(curve, key=lambda c: c[1])
    within = [s for s, v in curve if v <= 1.0]
    if within:
        return f"from {min(within)} steps its pictures are {other}'s to within one grey level"
    return (f"its pictures stay apart from {other}'s from the same noise (nearest at {steps} step"
            f"{'s' * (steps != 1)}: {levels:.3g} grey levels)")


def sampler_answer(result, sampler: str) -> Answer:
    """The two-layer answer for one sampler of a SweepResult."""
    knees = result.knees.get(sampler, {})
    cells = [c for c in result.cells if c.sampler == sampler]
    if not cells:
        return Answer(sampler, f"No step count finished for {sampler}.", "")
    n = result.config.n
    largest = max(c.steps for c in cells)
    head: list[str] = []
    detail: list[str] = []
    fields: dict = {"largest": largest}
    conv = knees.get("conv_pixel")
    if conv is not None and conv.caveat:
        head.append(f"{sampler} draws fresh noise at every step, so its pictures do not settle on one image")
    elif conv is not None and conv.values and _other_model(result, sampler) is not None:
        curve = _pixel_curve(result, sampler, conv)
        head.append(_nearness(result, sampler, curve, _other_model(result, sampler)))
        detail.append(f"Pixel RMSE to {_against(result, sampler)} from the same noise, in grey levels: "
                      + ", ".join(f"{s} steps {v:.3g}" for s, v in curve) + ".")
    elif conv is not None and conv.values:
        curve = _pixel_curve(result, sampler, conv)
        at = dict(curve)
        last = at.get(largest)
        if last is not None and len(curve) > 1:
            eye = next((s for s, v in curve if s < largest and v + last <= EYE_LEVELS), None)
            if eye is not None:
                fields["eye_steps"] = eye
                head.append(f"to the eye, {eye} step{'s' * (eye != 1)} already look like {largest} here "
                            f"(at most {math.ceil(at[eye] + last)} grey level{'s' * (math.ceil(at[eye] + last) != 1)}"
                            " apart)")
            else:
                head.append(f"to the eye, the picture still changes up to {largest} steps, the largest count run")
        broken = [s for s, v in curve if v > BROKEN_LEVELS]
        if broken:
            if max(broken) == largest:
                head.append(f"the picture is still broken at {largest} steps")
            else:
                whole = min(s for s, _ in curve if s > max(broken))
                fields["broken_below"] = whole
                head.append(f"the picture breaks below {whole} steps")
        settled = _steps_at(result, sampler, conv.tolerance_nfe)
        if settled is not None and settled < largest:
            fields["settled_steps"] = settled
            head.append(f"pixels stop changing after {settled}")
        else:
            head.append(f"pixels are still changing at {largest}, the largest count run")
        detail.append(f"Pixel RMSE to {_against(result, sampler)} from the same noise, in grey levels: "
                      + ", ".join(f"{s} steps {v:.3g}" for s, v in curve) + ".")
    quality = next((knees[k] for k in QUALITY_METRICS if k in knees), None)
    if quality is not None:
        clause, sentence, q_steps, need = _quality(result, sampler, quality, n)
        if clause:
            head.append(clause)
        detail.append(sentence)
        fields.update(quality_steps=q_steps, needed_n=need)
    if not head:
        head.append(f"nothing measured here says where more steps stop paying off for {sampler}")
    headline = "; ".join(head)
    if not headline.startswith(sampler):  # a sampler's name keeps its own case ("iPNDM")
        headline = headline[0].upper() + headline[1:]
    headline += f" ({sampler})."
    return Answer(sampler, headline, " ".join(detail), **fields)


def sampler_answers(result) -> list[Answer]:
    """Every sampler's Answer, in the sweep's sampler order."""
    return [sampler_answer(result, s) for s in result.samplers]


def exercise_answers(result) -> dict[str, str]:
    """Sampler display name -> its answer as one text (the headline, then the detail)."""
    return {a.sampler: a.text for a in sampler_answers(result)}


def curve_label(knee, largest: int) -> str | None:
    """What quality.png writes at the end of a curve, in the headline's words (None: nothing to mark)."""
    if knee.caveat or knee.separated is False:
        return None
    if knee.tolerance is not None:
        reached = knee.tolerance_nfe is not None and knee.tolerance_nfe < max(knee.nfe)
        return None if reached else f"still changing at {largest}, the largest count run"
    if knee.plateaued is False:
        return f"still improving at {largest}, the largest count run"
    return None

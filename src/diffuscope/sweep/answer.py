"""The exercise's answer in one sentence per sampler: where do more steps stop paying off?

    answers = exercise_answers(result)          # {"DDIM": "DDIM: diminishing returns from 50 steps: ...", ...}

Two readings of "diminishing returns", each from the sweep's knees (knee.py):

- the image itself: beyond the first step count whose convergence RMSE to the fine-step reference is at most one
  8-bit grey level (``GREY_LEVEL``), more steps change nothing a saved PNG can show (deterministic samplers only:
  a stochastic sampler does not converge to the deterministic reference);
- quality: EDM's rule (Karras et al. 2022, Fig. 2), the fewest steps within ``threshold`` (3%) of the best value
  of the first quality metric measured (FD, else accuracy), with the paired 95% interval of the cell below it; a
  quality curve that separates no two step counts beyond sampling noise (``Knee.separated`` is False) supports no
  point, and the sentence says so instead.

The sentence names the larger of the two step counts (beyond it both hold), the uncertainty of the quality point,
and a hint to raise n when that point is not resolved. The page (``diffuscope serve``) and the report
(``diffuscope demo``) both print these sentences, so they always agree.
"""

from __future__ import annotations

QUALITY_METRICS = {"fd": "FD", "accuracy": "accuracy vs prompt"}  # the first one measured answers "quality"


def _steps_at(result, sampler: str, nfe: int | None) -> int | None:
    return next((c.steps for c in result.cells if c.sampler == sampler and c.nfe == nfe), None)


def _interval(gap) -> str:
    est, lo, hi = gap
    return f"{est:+.3g} [{lo:+.3g}, {hi:+.3g}]"


def sampler_answer(result, sampler: str) -> str:
    """The one-sentence answer for one sampler of a SweepResult."""
    knees = result.knees.get(sampler, {})
    cells = [c for c in result.cells if c.sampler == sampler]
    if not cells:
        return f"{sampler}: no finished cells"
    largest = max(c.steps for c in cells)
    claims: list[str] = []
    points: list[int] = []  # the step counts from which each claim holds
    settled = True  # False when a reading did not settle in the tested range
    hint = ""
    conv = knees.get("conv_pixel")
    if conv is not None and not conv.caveat and conv.tolerance is not None:
        steps = _steps_at(result, sampler, conv.tolerance_nfe)
        if steps is None:
            settled = False
            claims.append(f"the image still changes by more than one grey level at {largest} steps")
        else:
            points.append(steps)
            claims.append("beyond it the image changes by less than one grey level")
    quality = next((knees[k] for k in QUALITY_METRICS if k in knees), None)
    if quality is not None:
        label = QUALITY_METRICS[quality.metric]
        pct = f"{100 * quality.threshold:g}%"
        if not quality.plateaued and quality.separated is not False:
            settled = False
        if quality.separated is False:  # the curve is flat inside its noise: it supports no point (knee.py)
            claims.append(f"{label} tells no two step counts apart at n = {result.config.n} (the worst against "
                          f"the best is inside the 95% noise)")
            hint = f"; raise n (now {result.config.n}) to measure quality"
        elif quality.plateaued is None:
            claims.append(f"{label} was measured at one step count only: no trend")
        elif not quality.plateaued:
            claims.append(f"{label} still improves by more than {pct} at {largest} steps (try more steps)")
        else:
            steps = _steps_at(result, sampler, quality.edm_nfe)
            points.append(steps)
            text = f"quality ({label}) is within {pct} of the best from {steps} steps"
            if quality.gap is not None:
                below = _steps_at(result, sampler, quality.gap_nfe)
                text += f" ({below} steps vs the best: {_interval(quality.gap)}, paired 95%"
                text += ", resolved)" if quality.resolved else ", not resolved)"
                if not quality.resolved:
                    hint = f"; raise n (now {result.config.n}) to resolve it"
            claims.append(text)
    if not claims:
        return f"{sampler}: nothing measured that answers the question"
    if settled and points:
        head = f"{sampler}: diminishing returns from {max(points)} steps: "
    else:
        head = f"{sampler}: no diminishing-returns point in the tested range: "
    return head + "; ".join(claims) + hint + "."


def exercise_answers(result) -> dict[str, str]:
    """Sampler display name -> its one-sentence answer, in the sweep's sampler order."""
    return {s: sampler_answer(result, s) for s in result.samplers}

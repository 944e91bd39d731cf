"""The lesson's claims about the phases of sampling, each next to what was measured on this model, in one line.

    for claim, measured, verdict in phase_verdicts(freq, commit):   # from phases.frequency_split / commitment_curve
        print(f"{claim}: {measured} -> {verdict}")

The claims are the lesson's: early steps decide composition (coarse structure), the middle steps structure, the
late steps fine detail (Ho et al. 2020, Sec. 4.3; Choi et al. 2022, "Perception Prioritized Training"). The
measurement is the split of each step's change of the predicted clean image into coarse and fine frequencies
(phases.FrequencySplit) and the commitment curve (phases.Commitment). The page (``diffuscope serve``) and the
report (``diffuscope demo``) print the same lines.

``explained_verdicts`` gives each verdict its ``why`` (one or two sentences: what was measured and why it came out
"holds" or "not seen on this model") and ``numbers`` (the measured values behind it), for the page and the demo.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

HOLDS, NOT_SEEN = "holds", "not seen on this model"


@dataclass(frozen=True)
class Verdict:
    """One claim of the lesson against this model: what was measured, the verdict, and why it came out so."""

    claim: str
    measured: str  # the measurement in words, with its numbers
    verdict: str  # HOLDS or NOT_SEEN
    why: str
    numbers: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _pct(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{100 * v:.0f}%"


def phase_verdicts(freq=None, commit=None) -> list[tuple[str, str, str]]:
    """(claim, measured, verdict) per claim; claims without a measurement are left out."""
    out: list[tuple[str, str, str]] = []
    if freq is not None:
        total = freq.steps[-1] + 1
        early, middle, late = freq.band_summary(3)
        if any(part["first"] is None for part in (early, middle, late)):
            return out  # fewer than 3 steps: no thirds
        out.append(("composition is decided early",
                    f"early steps ({early['first']}-{early['last']} of {total}): {_pct(early['change_share'])} of "
                    f"the change, {_pct(early['low_share'])} of it coarse",
                    "holds" if early["change_share"] > max(middle["change_share"], late["change_share"])
                    and early["low_share"] > freq.white_share else "not seen on this model"))
        out.append(("structure forms in the middle",
                    f"middle steps ({middle['first']}-{middle['last']}): {_pct(middle['change_share'])} of the "
                    f"change, {_pct(middle['low_share'])} of it coarse",
                    "holds" if middle["change_share"] > late["change_share"] else "not seen on this model"))
        out.append(("detail comes late",
                    f"late steps ({late['first']}-{late['last']}): {_pct(late['change_share'])} of the change, "
                    f"{_pct(late['low_share'])} of it coarse",
                    "holds" if late["low_share"] < early["low_share"] else "not seen on this model"))
    if commit is not None:
        if commit.keep is not None:
            first = next((k for k, v in zip(commit.points, commit.keep) if v >= 0.9), None)
            measured = (f"90% of fresh-noise finishes keep the class from step {first} of {commit.steps}"
                        if first is not None else
                        f"even at step {commit.points[-1]} of {commit.steps} only {_pct(commit.keep[-1])} keep it")
            verdict = ("holds" if first is not None and first < commit.steps / 2 else "not seen on this model")
            out.append(("the class is committed in the first half", measured, verdict))
        r0, r1 = commit.rmse[0], commit.rmse[-1]
        half = next((k for k, v in zip(commit.points, commit.rmse) if v <= r0 / 2), None)
        out.append(("any image is reachable from noise; the particular image is fixed step by step",
                    f"finishes differ from the original by RMSE {r0:.3f} from step 0, {r1:.3f} from step "
                    f"{commit.points[-1]}" + (f", half of it by step {half}" if half is not None else ""),
                    "holds" if r1 < r0 / 2 else "not seen on this model"))
    return out


def verdict_lines(freq=None, commit=None) -> list[str]:
    """One line per claim: 'claim: measured -> verdict'."""
    return [f"{c}: {m} -> {v}" for c, m, v in phase_verdicts(freq, commit)]


def _band_why(claim: str, verdict: str, bands: dict, white: float) -> str:
    e, m, l = (bands[k] for k in ("early", "middle", "late"))
    share = (f"Early, middle and late steps made {_pct(e['change_share'])}, {_pct(m['change_share'])} and "
             f"{_pct(l['change_share'])} of the total change to the predicted clean image")
    if claim == "composition is decided early":
        coarse = f"{_pct(e['low_share'])} of the early change was coarse (white noise would be {_pct(white)})"
        return (f"{share}; {coarse}. It holds when the early third changes the picture most and mostly in coarse "
                f"shapes" + ("." if verdict == HOLDS else ", which this model did not show."))
    if claim == "structure forms in the middle":
        return (f"{share}. It holds when the middle third changes the picture more than the late third"
                + ("." if verdict == HOLDS else "; here the late third changed it as much or more."))
    return (f"Late steps' change was {_pct(l['low_share'])} coarse against {_pct(e['low_share'])} early. It holds "
            "when what changes late is finer than what changed early"
            + ("." if verdict == HOLDS else "; here it was not."))


def explained_verdicts(freq=None, commit=None, *, one_image_per_prompt: bool = False) -> list[Verdict]:
    """``phase_verdicts`` with each verdict's ``why`` and ``numbers``. ``one_image_per_prompt``: the model was
    trained on a single image per prompt (the emoji model, data/emoji.py), which explains a class committed from
    step 0."""
    out: list[Verdict] = []
    rows = phase_verdicts(freq, commit)
    bands = {}
    if freq is not None and len(rows) >= 3 and rows[0][0] == "composition is decided early":
        bands = dict(zip(("early", "middle", "late"), freq.band_summary(3)))
    for claim, measured, verdict in rows:
        if claim in ("composition is decided early", "structure forms in the middle", "detail comes late"):
            numbers = {k: {"first": b["first"], "last": b["last"], "change_share": _num(b["change_share"]),
                           "coarse_share": _num(b["low_share"])} for k, b in bands.items()}
            numbers["white_noise_coarse_share"] = _num(freq.white_share)
            out.append(Verdict(claim, measured, verdict, _band_why(claim, verdict, bands, freq.white_share), numbers))
        elif claim == "the class is committed in the first half":
            keep = dict(zip(commit.points, commit.keep))
            first = next((k for k, v in keep.items() if v >= 0.9), None)
            numbers = {"points": list(commit.points), "keep": [_num(v) for v in commit.keep], "steps": commit.steps,
                       "first_90": first}
            if first == commit.points[0]:
                why = (f"Finishes restarted from fresh noise at step {first} already keep the class "
                       f"({_pct(keep[first])}): the prompt decides it before any step runs, so the class is committed "
                       "from step 0")
                why += (": each prompt has one training image, so nothing is left for the noise to decide."
                        if one_image_per_prompt else ", not by the early steps.")
            elif verdict == HOLDS:
                why = (f"From step {first} of {commit.steps} on, 90% of finishes from fresh noise keep the class: "
                       "before half the steps, so the early steps commit it.")
            else:
                why = ("90% of finishes from fresh noise keep the class only from step "
                       f"{first} of {commit.steps}, past half the steps." if first is not None else
                       f"No restart point keeps the class in 90% of finishes (at most {_pct(max(commit.keep))}).")
            out.append(Verdict(claim, measured, verdict, why, numbers))
        else:
            r0, r1 = commit.rmse[0], commit.rmse[-1]
            numbers = {"points": list(commit.points), "rmse": [_num(v) for v in commit.rmse]}
            why = (f"Finishes from fresh noise at step 0 land {r0:.3f} RMSE from the original (any image is "
                   f"reachable), and from step {commit.points[-1]} only {r1:.3f}: each step fixes more of the "
                   "particular image." if verdict == HOLDS else
                   f"Finishes from step {commit.points[-1]} are still {r1:.3f} RMSE from the original against "
                   f"{r0:.3f} from step 0: not half, so the steps did not fix the particular image as claimed.")
            out.append(Verdict(claim, measured, verdict, why, numbers))
    return out


def _num(v) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)

"""The lesson's claims about the phases of sampling, each next to what was measured on this model, in one line.

    for claim, measured, verdict in phase_verdicts(freq, commit):   # from phases.frequency_split / commitment_curve
        print(f"{claim}: {measured} -> {verdict}")

The claims are the lesson's: early steps decide composition (coarse structure), the middle steps structure, the
late steps fine detail (Ho et al. 2020, Sec. 4.3; Choi et al. 2022, "Perception Prioritized Training"). The
measurement is the split of each step's change of the predicted clean image into coarse and fine frequencies
(phases.FrequencySplit) and the commitment curve (phases.Commitment). The page (``diffuscope serve``) and the
report (``diffuscope demo``) print the same lines.
"""

from __future__ import annotations

import math


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

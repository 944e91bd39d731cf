"""The exercise's two-layer answers (headline, detail) and the phase verdicts (hand-made knees: exact, fast)."""

from types import SimpleNamespace

import pytest

from diffuscope.sweep.answer import exercise_answers, sampler_answer
from diffuscope.sweep.config import GREY_LEVEL
from diffuscope.sweep.knee import find_knee, needed_n, settle

STEPS = (1, 2, 3, 5, 10, 25, 50, 100)
G = GREY_LEVEL


def _result(conv_levels, fd, *, gaps=None, spread=None, separated=None, caveat="", n=32):
    """A hand-made sweep of one sampler: conv_levels in grey levels to the reference, fd per step count, and
    ``gaps``: step count -> paired 95% interval of FD there minus the best (None: no intervals)."""
    from dataclasses import replace

    cells = [SimpleNamespace(sampler="iPNDM", steps=s, nfe=s) for s in STEPS]
    conv = find_knee(STEPS, [v * G for v in conv_levels], metric="conv_pixel", tolerance=G, caveat=caveat)
    quality = settle(find_knee(STEPS, fd, metric="fd"), None if gaps is None else gaps.get, n)
    if spread is not None or separated is not None:
        quality = replace(quality, spread=spread, separated=separated)
    return SimpleNamespace(cells=cells, knees={"iPNDM": {"conv_pixel": conv, "fd": quality}}, samplers=["iPNDM"],
                           config=SimpleNamespace(n=n), reference={"sampler": "DPM++ 2M", "steps": 151})


SETTLED = [60, 30, 20, 9, 1.5, 0.6, 0.2, 0.1]  # breaks below 5, looks like 100 from 10, settles after 25


def test_plateau_inside_the_run_and_the_broken_picture():
    # FD's best 2.9 at 100: the band is +-0.087; 25 steps (2.95) is the first count inside it, and settles
    r = _result(SETTLED, [9, 7, 5, 3.5, 3.0, 2.95, 2.92, 2.9], gaps={25: (0.05, 0.01, 0.08)})
    a = sampler_answer(r, "iPNDM")
    assert a.headline == ("To the eye, 10 steps already look like 100 here (at most 2 grey levels apart); the "
                          "picture breaks below 5 steps; pixels stop changing after 25; quality (FD) is within 3% "
                          "of its best from 25 steps (iPNDM).")
    assert (a.eye_steps, a.broken_below, a.settled_steps, a.quality_steps, a.needed_n) == (10, 5, 25, 25, None)
    assert "[" not in a.headline and "95%" not in a.headline  # no intervals in the headline
    assert a.detail.startswith("Pixel RMSE to the 151-step DPM++ 2M reference from the same noise, in grey levels: "
                               "1 steps 60, 2 steps 30")
    assert ("FD at 25 steps vs the best (100 steps): +0.05 [+0.01, +0.08], paired 95%, inside the 3% band "
            "(+-0.087): settled at n = 32.") in a.detail
    assert "not settled" not in a.text and "would settle" not in a.text
    assert exercise_answers(r) == {"iPNDM": a.text}


def test_to_the_eye_bounds_the_distance_to_the_largest_count_through_the_reference():
    # 10 steps are 1.5 grey levels from the reference and 100 steps 3: they may be 4.5 apart (> 4); 25 steps at most 3.6
    r = _result([60, 30, 20, 9, 1.5, 0.6, 0.2, 3], [9, 7, 5, 3.5, 3.0, 2.95, 2.92, 2.9])
    a = sampler_answer(r, "iPNDM")
    assert a.eye_steps == 25 and "25 steps already look like 100 here (at most 4 grey levels apart)" in a.headline


def test_still_changing_at_the_largest_count_is_never_a_plateau():
    # within one grey level only at 100 (the largest count run): nothing beyond it was run
    r = _result([60, 50, 40, 30, 20, 8, 5, 0.9], [9, 8, 7, 6, 5, 4, 3.5, 3.0])
    a = sampler_answer(r, "iPNDM")
    assert "pixels are still changing at 100, the largest count run" in a.headline
    assert "stop changing" not in a.headline and "from 100" not in a.text
    assert "to the eye, the picture still changes up to 100 steps" in a.headline.lower()
    assert "quality (FD) still improves at 100, the largest count run" in a.headline
    assert a.settled_steps is None and a.eye_steps is None
    assert "the picture breaks below 25 steps" in a.headline
    never = _result([60, 50, 40, 30, 20, 8, 3, 2], [9, 8, 7, 6, 5, 4, 3.5, 3.0])
    assert "pixels are still changing at 100, the largest count run" in sampler_answer(never, "iPNDM").headline


def test_an_unsettled_quality_point_says_so_and_names_the_n_that_settles_it():
    # (d): 25 steps is inside the band by its mean, but its interval reaches outside: not settled at n = 16
    gaps = {25: (0.05, -0.05, 0.15), 50: (0.02, -0.1, 0.14)}
    r = _result(SETTLED, [5.0, 4, 3.5, 3.1, 3.0, 2.95, 2.92, 2.9], gaps=gaps, n=16)
    a = sampler_answer(r, "iPNDM")
    need = needed_n(16, (0.05, -0.05, 0.15), 0.087)
    assert a.needed_n == need == 239  # 16 x (0.1 / (0.087 - 0.05))^2 x ((1.96 + 0.84) / 1.96)^2 = 238.6
    assert a.quality_steps is None and "stops improving" in a.headline
    assert (f"; where quality (FD) stops improving is not settled at n = 16: {need} images per step count would "
            "settle it (iPNDM).") in a.headline
    assert "[" not in a.headline  # the interval is in the detail
    assert ("FD is within 3% of the best from 25 steps by its mean, but 25 steps vs the best (100 steps) is +0.05 "
            f"[-0.05, +0.15], paired 95%, reaching outside the 3% band (+-0.087): not settled at n = 16; n = {need} "
            "would settle it.") in a.detail
    # a flat curve inside its noise says the same, sized for the smallest count inside the band
    wide = {s: (0.08, -0.1, 0.26) for s in STEPS}  # every count inside the band by its mean: 3, 5, ... 50 tried
    flat = _result(SETTLED, [3.0, 2.99, 2.98, 2.97, 2.96, 2.95, 2.92, 2.9], gaps=wide, spread=(0.1, -0.1, 0.3),
                   separated=False, n=8)
    b = sampler_answer(flat, "iPNDM")
    assert "not settled at n = 8" in b.headline and b.needed_n == needed_n(8, (0.08, -0.1, 0.26), 0.087)
    assert "but 3 steps vs the best" in b.detail
    # no paired interval (no resamples): the mean alone is said in the detail, never a headline claim
    bare = sampler_answer(_result(SETTLED, [5.0, 4, 3.5, 3.1, 3.0, 2.95, 2.92, 2.9]), "iPNDM")
    assert "quality" not in bare.headline and "(no paired interval, so not settled)" in bare.detail


def test_a_quality_point_is_never_settled_at_the_largest_count_run():
    # only 100 steps are within 3% of the best: nothing below it can settle, whatever n
    r = _result(SETTLED, [9, 8, 7, 6, 5, 4, 3.5, 2.9], gaps={}, n=16)
    a = sampler_answer(r, "iPNDM")
    assert a.quality_steps is None and "from 100" not in a.text
    assert "quality (FD) still improves at 100, the largest count run" in a.headline


def test_stochastic_sampler_makes_no_pixel_claims():
    r = _result([60, 50, 40, 30, 20, 8, 3, 2], [9.0, 7, 5, 3.5, 3.0, 2.95, 2.92, 2.9],
                gaps={25: (0.05, 0.01, 0.08)}, caveat="stochastic")
    a = sampler_answer(r, "iPNDM")
    assert a.headline.startswith("iPNDM draws fresh noise at every step, so its pictures do not settle")
    assert "grey level" not in a.text and "quality (FD) is within 3% of its best from 25 steps" in a.headline


def test_plot_label_agrees_with_the_headline():
    from diffuscope.sweep.answer import curve_label

    moving = _result([60, 50, 40, 30, 20, 8, 5, 0.9], [9, 8, 7, 6, 5, 4, 3.5, 3.0])
    conv, fd = moving.knees["iPNDM"]["conv_pixel"], moving.knees["iPNDM"]["fd"]
    assert curve_label(conv, 100) == "still changing at 100, the largest count run"
    assert curve_label(fd, 100) == "still improving at 100, the largest count run"
    settled = _result(SETTLED, [9, 7, 5, 3.5, 3.0, 2.95, 2.92, 2.9])
    assert settled.knees["iPNDM"]["conv_pixel"].plateaued is False  # the relative rule never settles on pixels
    assert curve_label(settled.knees["iPNDM"]["conv_pixel"], 100) is None  # but the headline says "after 25"


def _phases():
    """(steps, a frequency split, a commitment) where every phase claim holds."""
    from diffuscope.lesson.phases import FrequencySplit

    steps = list(range(1, 10))
    freq = FrequencySplit(steps, [1.0] * 9, low=[9, 8, 7, 2, 2, 1, 0.1, 0.1, 0.1],
                          high=[1, 1, 1, 1, 1, 1, 0.5, 0.5, 0.5], cutoff=0.125, white_share=0.05)
    commit = SimpleNamespace(keep=[0.5, 0.95, 1.0], points=[0, 4, 9], steps=10, rmse=[0.4, 0.2, 0.01])
    return steps, freq, commit


def test_phase_verdicts():
    from diffuscope.lesson.phases import FrequencySplit
    from diffuscope.lesson.verdicts import phase_verdicts, verdict_lines

    steps, freq, commit = _phases()
    rows = phase_verdicts(freq, commit)
    assert [r[0] for r in rows] == ["composition is decided early", "structure forms in the middle",
                                    "detail comes late", "the class is committed in the first half",
                                    "any image is reachable from noise; the particular image is fixed step by step"]
    assert all(r[2] == "holds" for r in rows), rows
    assert rows[2][1] == "late steps (7-9): 5% of the change, 17% of it coarse"  # 1.8 of 36.8; 0.3 of 1.8
    flipped = FrequencySplit(steps, [1.0] * 9, low=list(reversed(freq.low)), high=list(reversed(freq.high)),
                             cutoff=0.125, white_share=0.05)
    assert phase_verdicts(flipped)[0][2] == "not seen on this model"
    assert len(verdict_lines(freq, commit)) == 5


def test_each_verdict_says_why_with_its_numbers():
    from diffuscope.lesson.phases import FrequencySplit
    from diffuscope.lesson.verdicts import explained_verdicts, phase_verdicts

    steps, freq, commit = _phases()
    rows = explained_verdicts(freq, commit)
    assert [(v.claim, v.measured, v.verdict) for v in rows] == phase_verdicts(freq, commit)
    assert all(v.why and v.why.count(".") <= 3 for v in rows)
    early = rows[0]
    assert early.why.startswith("Early, middle and late steps made 73%, 22% and 5% of the total change")
    assert early.numbers["early"]["change_share"] == pytest.approx(27 / 36.8)  # (9 + 1) + (8 + 1) + (7 + 1) of 36.8
    assert "white noise would be 5%" in early.why and early.why.endswith("coarse shapes.")
    assert rows[3].why.startswith("From step 4 of 10 on, 90% of finishes") and rows[3].numbers["first_90"] == 4
    assert rows[4].numbers["rmse"] == [0.4, 0.2, 0.01] and "any image is reachable" in rows[4].why
    # a class kept by finishes from pure noise: committed from step 0, because the prompt decides it
    emoji = SimpleNamespace(keep=[1.0, 1.0, 1.0], points=[0, 4, 9], steps=10, rmse=[0.4, 0.3, 0.3])
    committed = explained_verdicts(None, emoji, one_image_per_prompt=True)
    assert committed[0].verdict == "holds" and "committed from step 0" in committed[0].why
    assert committed[0].why.endswith("each prompt has one training image, so nothing is left for the noise to "
                                     "decide.")
    assert "one training image" not in explained_verdicts(None, emoji)[0].why
    assert committed[1].verdict == "not seen on this model" and "not half" in committed[1].why
    flipped = FrequencySplit(steps, [1.0] * 9, low=list(reversed(freq.low)), high=list(reversed(freq.high)),
                             cutoff=0.125, white_share=0.05)
    assert explained_verdicts(flipped)[0].why.endswith("which this model did not show.")

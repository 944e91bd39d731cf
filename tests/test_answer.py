"""The exercise's one-sentence answers and the phase verdicts (on hand-made knees: exact, milliseconds)."""

from types import SimpleNamespace

from diffuscope.sweep.answer import exercise_answers, sampler_answer
from diffuscope.sweep.config import GREY_LEVEL
from diffuscope.sweep.knee import find_knee, with_gap

STEPS = (10, 25, 50, 100)


def _result(conv, fd, *, gap=None, caveat="", n=32):
    cells = [SimpleNamespace(sampler="DDIM", steps=s, nfe=s) for s in STEPS]
    knees = {"conv_pixel": find_knee(STEPS, conv, metric="conv_pixel", tolerance=GREY_LEVEL, caveat=caveat),
             "fd": with_gap(find_knee(STEPS, fd, metric="fd"), gap)}
    return SimpleNamespace(cells=cells, knees={"DDIM": knees}, samplers=["DDIM"], config=SimpleNamespace(n=n))


def test_answer_names_the_later_of_the_two_points_and_the_resolution():
    r = _result([0.1, 0.02, 0.005, 0.001], [5.0, 2.95, 2.92, 2.9], gap=(2.1, 1.5, 2.6))
    text = sampler_answer(r, "DDIM")
    # conv <= 2/255 from 50 steps; FD within 3% of 2.9 from 25 steps -> both hold from 50
    assert text.startswith("DDIM: diminishing returns from 50 steps: beyond it the image changes by less than one "
                           "grey level")
    assert "quality (FD) is within 3% of the best from 25 steps (10 steps vs the best: +2.1 [+1.5, +2.6]" in text
    assert "resolved)" in text and "raise n" not in text
    assert text.count(".") >= 1 and "\n" not in text
    assert exercise_answers(r) == {"DDIM": text}


def test_unresolved_point_hints_to_raise_n():
    r = _result([0.1, 0.02, 0.005, 0.001], [5.0, 2.95, 2.92, 2.9], gap=(0.05, -0.05, 0.15), n=16)
    assert "not resolved); raise n (now 16) to resolve it." in sampler_answer(r, "DDIM")


def test_a_quality_curve_inside_its_noise_supports_no_point():
    from dataclasses import replace

    r = _result([0.1, 0.02, 0.005, 0.001], [3.0, 2.95, 2.92, 2.9])
    r.knees["DDIM"]["fd"] = replace(r.knees["DDIM"]["fd"], separated=False)
    text = sampler_answer(r, "DDIM")
    assert text.startswith("DDIM: diminishing returns from 50 steps: beyond it the image changes by less than one")
    assert "FD tells no two step counts apart at n = 32" in text and "raise n (now 32) to measure quality." in text
    assert "within 3%" not in text
    flat_and_moving = _result([0.3, 0.2, 0.1, 0.05], [3.0, 2.95, 2.92, 2.9])
    flat_and_moving.knees["DDIM"]["fd"] = replace(flat_and_moving.knees["DDIM"]["fd"], separated=False)
    assert sampler_answer(flat_and_moving, "DDIM").startswith("DDIM: no diminishing-returns point in the tested")


def test_not_settled_says_so():
    r = _result([0.3, 0.2, 0.1, 0.05], [9.0, 7.0, 5.0, 3.0])
    text = sampler_answer(r, "DDIM")
    assert text.startswith("DDIM: no diminishing-returns point in the tested range")
    assert "still changes by more than one grey level at 100 steps" in text
    assert "still improves by more than 3% at 100 steps" in text


def test_stochastic_sampler_ignores_convergence():
    r = _result([0.3, 0.2, 0.1, 0.05], [5.0, 2.95, 2.92, 2.9], caveat="stochastic")
    text = sampler_answer(r, "DDIM")
    assert "grey level" not in text and text.startswith("DDIM: diminishing returns from 25 steps")


def test_phase_verdicts():
    from diffuscope.lesson.phases import FrequencySplit
    from diffuscope.lesson.verdicts import phase_verdicts, verdict_lines

    steps = list(range(1, 10))
    freq = FrequencySplit(steps, [1.0] * 9, low=[9, 8, 7, 2, 2, 1, 0.1, 0.1, 0.1],
                          high=[1, 1, 1, 1, 1, 1, 0.5, 0.5, 0.5], cutoff=0.125, white_share=0.05)
    commit = SimpleNamespace(keep=[0.5, 0.95, 1.0], points=[0, 4, 9], steps=10, rmse=[0.4, 0.2, 0.01])
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

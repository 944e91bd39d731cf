"""Several models in one sweep (issue 32, sweep/series.py): a distilled student side by side with its teacher.

On exact denoisers: one report with every model's rows, every model from the same noise, and each model's
convergence measured against the FIRST model's converged reference (a model swept against itself under two names
gives the single-model numbers; another model's numbers are its RMSE to the first one's reference images). On the
command line: a tiny teacher and its student with their own defaults, and the one-line refusals (other image shape,
other prompts, the same --model twice, too many)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER
from diffuscope.core.reference import GaussianMixtureDenoiser
from diffuscope.core.schedules import EDMSchedule
from diffuscope.metrics.convergence import rmse_per_row
from diffuscope.sweep import SweepConfig, SweepInputs, SweepModel, sweep, sweep_models, write_reports
from diffuscope.sweep.answer import sampler_answers
from test_sweep import _inputs, _mixture

pytestmark = pytest.mark.usefixtures("one_thread")

N = 12
CONFIG = SweepConfig(steps=(2, 4, 8), samplers=("DDIM", "Euler"), n=N, guidance=1.0, ci_resamples=0,
                     reference_steps=16, grid_rows=N, metrics=("accuracy", "convergence"))


def _student(gmm) -> SweepInputs:
    """Another model of the same shape and classes (shifted means): a stand-in for a student."""
    shifted = GaussianMixtureDenoiser(gmm.means + 0.2, 0.25, classes=torch.arange(3))
    return SweepInputs(shifted, EDMSchedule(), (1, 4, 4), torch.arange(N) % 3, null_label=3)


def test_a_model_against_itself_under_two_names_gives_the_single_model_numbers():
    gmm = _mixture()
    alone = sweep(_inputs(gmm, N), CONFIG)
    both = sweep_models([SweepModel("teacher", _inputs(gmm, N), CONFIG), SweepModel("again", _inputs(gmm, N), CONFIG)])
    assert both.samplers == ["teacher · DDIM", "teacher · Euler", "again · DDIM", "again · Euler"]
    for name in ("teacher", "again"):
        for cell in alone.cells:
            twin = both.cell(f"{name} · {cell.sampler}", cell.steps)
            assert twin.metrics == pytest.approx(cell.metrics, rel=1e-9, abs=1e-12)
            assert torch.equal(twin.images, cell.images)  # the same noise in every cell of every model
    assert torch.equal(both.reference_images, alone.reference_images)
    assert both.reference["model"] == "teacher" and both.reference["nfe"] == alone.reference["nfe"]  # one reference


def test_a_second_model_is_measured_against_the_first_models_reference(tmp_path):
    gmm = _mixture()
    student = _student(gmm)
    own = replace(CONFIG, steps=(3,), samplers=("Euler",))  # its own steps and sampler
    r = sweep_models([SweepModel("teacher", _inputs(gmm, N), CONFIG), SweepModel("student", student, own)])
    alone = sweep(_student(gmm), replace(own, metrics=("convergence",)))  # against its own reference
    cell, solo = r.cell("student · Euler", 3), alone.cell("Euler", 3)
    assert torch.equal(cell.images, solo.images)  # the same seeds, its own images
    assert torch.equal(cell.reference_images, r.reference_images)  # the teacher's converged images...
    by_hand = float(rmse_per_row(cell.images, r.reference_images).mean())
    assert cell.metrics["conv_pixel"] == pytest.approx(by_hand, rel=1e-9)  # ...are what it is measured against
    assert cell.metrics["conv_pixel"] > solo.metrics["conv_pixel"] + 0.05  # not against its own reference
    assert "accuracy" in cell.metrics  # the first model's evaluator measures every model
    assert r.config.steps == (2, 3, 4, 8) and [m["steps"] for m in r.models] == [[2, 4, 8], [3]]
    assert [c.sampler for c in r.cells].count("student · Euler") == 1
    # the answer names whose converged images a row is measured against: the reference model's, beside it
    answers = {a.sampler: a.detail for a in sampler_answers(r)}
    assert "Pixel RMSE to teacher's converged images (16-step Heun) from the same noise" in answers["student · Euler"]
    assert "Pixel RMSE to the 16-step Heun reference from the same noise" in answers["teacher · Euler"]
    assert "Pixel RMSE to the 16-step Heun reference from the same noise" in sampler_answers(alone)[0].detail
    # ...and its headline says how near it comes to them, not that its own picture is broken or still changing
    heads = {a.sampler: a.headline for a in sampler_answers(r)}
    levels = cell.metrics["conv_pixel"] * 255 / 2
    assert f"Its pictures stay apart from teacher's from the same noise (nearest at 3 steps: {levels:.3g} grey" \
        in heads["student · Euler"]
    assert "broken" not in heads["student · Euler"] and "still changing" not in heads["student · Euler"]

    paths = write_reports(r, tmp_path)
    assert {"grid.png", "quality.png", "report.json", "report.md", "report.html"} <= set(paths)
    data = json.loads((tmp_path / "report.json").read_text())
    assert [m["name"] for m in data["models"]] == ["teacher", "student"]
    assert {c["sampler"] for c in data["cells"]} == {"teacher · DDIM", "teacher · Euler", "student · Euler"}
    md = (tmp_path / "report.md").read_text()
    for row in ("teacher · DDIM", "student · Euler"):
        assert f"({row}).**" in md  # a headline per model and sampler
        assert f"| {row} |" in md
    assert "| model · sampler | Steps: 2 | Steps: 3 | Steps: 4 | Steps: 8 |" in md
    assert "Convergence reference: teacher, Heun, 16 steps" in md
    # one model: the report is as it always was (no model column, no "models" record)
    write_reports(alone, tmp_path / "one")
    assert "models" not in json.loads((tmp_path / "one" / "report.json").read_text())
    assert "| sampler | Steps: 3 |" in (tmp_path / "one" / "report.md").read_text()


def test_models_that_cannot_be_compared_are_refused_in_one_line_before_any_image():
    gmm = _mixture()
    calls = []

    def counting(x, sigma, cond=None):
        calls.append(1)
        return gmm(x, sigma, cond)

    first = SweepModel("a", _inputs(gmm, N, counting), CONFIG)
    bigger = SweepInputs(gmm, EDMSchedule(), (1, 8, 8), torch.arange(N) % 3, null_label=3)
    unconditional = SweepInputs(gmm, EDMSchedule(), (1, 4, 4))
    cases = [([first, SweepModel("b", bigger, CONFIG)], "must share the image shape"),
             ([first, SweepModel("b", unconditional, CONFIG)], "must take the same prompts"),
             ([first, SweepModel("a", _student(gmm), CONFIG)], "given twice"),
             ([first, SweepModel("b", _student(gmm), replace(CONFIG, n=6))], "has its own n"),
             ([first] + [SweepModel(str(i), _student(gmm), CONFIG) for i in range(4)], "at most 4")]
    for models, says in cases:
        with pytest.raises(UsageError, match=says) as e:
            sweep_models(models)
        assert "\n" not in str(e.value)
    assert not calls


# --- the command line: a tiny teacher and its student ------------------------------------------------------------


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(teacher folder, student run): a tiny untrained 8x8 class model and a 3-step student on the teacher's
    default (Karras) grid after 2 optimizer steps (tests/student_helpers.py): no good sampler, but a real student
    run (its record, its grid)."""
    from student_helpers import quick_student, write_teacher

    teacher = write_teacher(tmp_path_factory.mktemp("teacher"))
    student = tmp_path_factory.mktemp("student") / "student"
    quick_student(teacher, student, steps=3, spacing=None)
    return teacher, student


def _cli(capsys, *argv):
    from diffuscope.cli import main

    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_sweeps_a_student_beside_its_teacher_with_each_ones_defaults(pair, tmp_path, capsys):
    teacher, student = pair
    code, out, err = _cli(capsys, "sweep", "--model", teacher, "--model", student, "--prompt", "3", "--dry-run",
                          "--out", tmp_path / "dry")
    assert code == 0, err
    t, s = teacher.name, student.name
    assert f"{t} · DDIM, steps 10 " in out and f"{t} · {DEFAULT_SAMPLER}, steps 100 " in out  # the usual defaults
    assert f"{s} · Euler, steps 3 (tuned)" in out and f"{s} · DDIM" not in out  # the student's own: K, Euler
    assert out.count('"guidance": 1.25') == 1 and out.count('"guidance": 1.0') == 1  # each model's own guidance
    assert f"reference: {t} · Heun 200 steps" in out and not (tmp_path / "dry").exists()

    code, out, err = _cli(capsys, "sweep", "--model", teacher, "--model", student, "--prompt", "3", "--n", "2",
                          "--steps", "2,3", "--samplers", "Euler", "--reference-steps", "6", "--no-progress",
                          "--out", tmp_path / "s")
    assert code == 0, err
    data = json.loads((tmp_path / "s" / "report.json").read_text())
    assert [(c["sampler"], c["steps"]) for c in data["cells"]] == [
        (f"{t} · Euler", 2), (f"{t} · Euler", 3), (f"{s} · Euler", 2), (f"{s} · Euler", 3)]  # flags apply to all
    assert [m["guidance_used"] for m in data["models"]] == [1.25, 1.0]  # guidance: each model's own default
    assert data["models"][1]["student_of"] == data["models"][0]["model_name"] == t
    assert f"({s} · Euler)." in out and f"({t} · Euler)." in out  # a headline per model
    assert (tmp_path / "s" / "report.md").read_text().count(f"Pixel RMSE to {t}'s converged images (6-step Heun)") == 1


@pytest.mark.parametrize(("flags", "want"), [
    ((), ((3,), ("Euler",), "tuned", 1.0)),  # the student's own: K, Euler, its grid, guidance 1
    (("--steps", "3"), ((3,), ("Euler",), "tuned", 1.0)),  # Euler at K: its own grid, as `sample --steps K`
    (("--steps", "2,3"), ((2, 3), ("Euler",), None, 1.0)),  # its grid exists only at K: the model's default
    (("--samplers", "DDIM"), ((3,), ("DDIM",), None, 1.0)),
    (("--spacing", "karras", "--guidance", "2"), ((3,), ("Euler",), "karras", 2.0)),
])
def test_the_sweep_resolves_a_students_settings_by_the_one_rule(pair, flags, want):
    """cli/sweep.py goes through models/student.py's resolve_sampling: the flags given, else the student's own
    (read before its weights load), else the sweep's defaults (the teacher's)."""
    from diffuscope.cli import build_parser
    from diffuscope.cli.sweep import DEFAULT_SAMPLERS, DEFAULT_STEPS, build_configs
    from diffuscope.sweep import parse_steps
    from diffuscope.sweep.config import parse_list

    teacher, student = pair
    args = build_parser().parse_args(["sweep", "--model", str(teacher), "--model", str(student), "--out", "x",
                                      *flags])
    (_, t), (_, s) = build_configs(args)
    assert (s.steps, s.samplers, s.spacing, s.guidance) == want
    given = dict(zip(flags[::2], flags[1::2]))  # flags given apply to the teacher too
    assert t.steps == parse_steps(given.get("--steps", DEFAULT_STEPS))
    assert t.samplers == parse_list(given.get("--samplers", DEFAULT_SAMPLERS))
    assert (t.spacing, t.guidance) == (given.get("--spacing"), float(given.get("--guidance", DEFAULT_GUIDANCE)))


@pytest.mark.parametrize(("models", "says"), [
    (("TEACHER", "mnist"), "must share the image shape"),
    (("mnist", "mnist"), "--model 'mnist' is given twice"),
    (("mnist", "a", "b", "c", "d"), "--model is given 5 times: at most 4"),
])
def test_cli_refuses_models_that_cannot_share_a_report_in_one_line(pair, tmp_path, capsys, models, says):
    argv = ["sweep", "--prompt", "3", "--n", "2", "--no-progress", "--out", tmp_path / "e"]
    for m in models:
        argv += ["--model", pair[0] if m == "TEACHER" else m]
    code, _, err = _cli(capsys, *argv)
    assert code == 2 and err.startswith("diffuscope: error:") and err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "e").exists()

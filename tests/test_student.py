"""A distilled student is a model like any other (issue 32): `reverse`, `phases`, `invert`, `info` and the page use
its own K steps, Euler, its own grid and guidance 1 unless told otherwise (one rule: models/student.py
``resolve_sampling``); shipped as a built-in folder with a hyphen in its name (mnist-4step), it is found by name and
offered by the page. The tiny student comes from tests/student_helpers.py (as test_distill.py's)."""

import json

import numpy as np
import pytest
from PIL import Image

from diffuscope.cli import main
from diffuscope.io import checkpoint as ckpt_io
from diffuscope.models.load import export_model, load_model
from diffuscope.models.student import Sampling, resolve_sampling, student_defaults
from student_helpers import quick_student, write_teacher

pytestmark = pytest.mark.usefixtures("one_thread")
K = 3


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return write_teacher(tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def student(teacher, tmp_path_factory):
    return quick_student(teacher, tmp_path_factory.mktemp("student") / "run", steps=K)


@pytest.fixture(scope="module")
def sigmas(student):
    """The student's own grid (its run record), as printed and stored: K + 1 sigmas ending at 0, not the model's
    default (Karras) grid at K steps, so a command that ignores the student's grid fails these tests."""
    from diffuscope.core.schedules import make_grid

    model = load_model(student)
    record = model.run_config["student"]
    assert len(record["sigmas"]) == K + 1 and record["sigmas"][-1] == 0
    karras = make_grid(model.schedule, K).sigmas.tolist()
    assert max(abs(a - b) for a, b in zip(karras[1:-1], record["sigmas"][1:-1])) > 0.01
    return record["sigmas"]


def _digit(path, value=200):
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8), mode="L").save(path)
    return path


def test_one_rule_resolves_what_was_given_else_the_students_else_the_commands(student, teacher):
    model, other = load_model(student), load_model(teacher)
    own = resolve_sampling(model)
    assert (own.sampler, own.steps, own.spacing, own.guidance) == ("Euler", K, "tuned", 1.0)
    assert [float(s) for s in own.grid(model).sigmas] == model.run_config["student"]["sigmas"]
    # another step count or sampler: the model's default formula grid (its own exists only at K Euler steps)
    assert resolve_sampling(model, steps=K + 1).spacing is None
    assert resolve_sampling(model, sampler="DDIM").spacing is None
    assert resolve_sampling(model, guidance=2.0).guidance == 2.0
    # the student's defaults read before any weights load give the same answer; a teacher gets the fallback
    assert resolve_sampling(student_defaults(model), fallback=Sampling("iPNDM", 50)).steps == K
    theirs = resolve_sampling(other, fallback=Sampling("iPNDM", 50))
    assert (theirs.sampler, theirs.steps, theirs.spacing, theirs.guidance, theirs.student) == (
        "iPNDM", 50, None, 1.25, None)


def test_reverse_uses_the_students_steps_sampler_grid_and_guidance(student, sigmas, tmp_path, capsys):
    assert main(["reverse", "--model", str(student), "--prompt", "3", "--device", "cpu",
                 "--out", str(tmp_path / "rev")]) == 0
    saved = json.loads((tmp_path / "rev" / "reverse.json").read_text())
    assert (saved["sampler"], saved["steps"], saved["guidance"], saved["nfe"]) == ("Euler", K, 1.0, K)
    assert saved["sigmas"] == pytest.approx(sigmas, abs=1e-9)  # its own grid, not the Karras formula's
    assert saved["shown_steps"] == list(range(K))  # --show defaults to at most the steps
    # a flag still wins: DDIM at K + 2 steps on the default grid, guided
    assert main(["reverse", "--model", str(student), "--prompt", "3", "--sampler", "DDIM", "--steps", str(K + 2),
                 "--guidance", "2", "--device", "cpu", "--out", str(tmp_path / "rev2")]) == 0
    other = json.loads((tmp_path / "rev2" / "reverse.json").read_text())
    assert (other["sampler"], other["steps"], other["guidance"]) == ("DDIM", K + 2, 2.0)
    assert capsys.readouterr().out.count("reverse process:") == 2


def test_phases_use_the_students_steps_sampler_grid_and_guidance(student, sigmas, tmp_path, capsys):
    assert main(["phases", "--model", str(student), "--prompt", "3", "--n", "2", "--device", "cpu",
                 "--out", str(tmp_path / "ph")]) == 0
    saved = json.loads((tmp_path / "ph" / "phases.json").read_text())
    assert saved["frequency"]["sigmas"] == pytest.approx(sigmas[1:K], abs=1e-9)  # the steps' sigmas, its grid
    assert saved["consistency"]["sampler"] == "Euler" and saved["consistency"]["steps"] == [1, K]
    notes = " ".join(saved["notes"])
    assert "guidance 1:" in notes and f"{K} steps of Euler" in notes and "tuned grid" in notes


def test_invert_uses_the_students_grid_at_its_k_steps(student, sigmas, tmp_path, capsys):
    image = _digit(tmp_path / "digit.png")
    assert main(["invert", "--model", str(student), "--image", str(image), "--prompt", "3", "--device", "cpu",
                 "--out", str(tmp_path / "inv")]) == 0
    out = capsys.readouterr().out
    assert f"with Euler, {K} steps each way ({2 * K - 1} NFE), guidance 1" in out
    saved = json.loads((tmp_path / "inv" / "invert.json").read_text())
    assert saved["grid"]["spacing"] == "tuned" and saved["grid"]["sigmas"] == pytest.approx(sigmas, abs=1e-9)


def test_info_says_it_is_a_k_step_student_of_its_teacher(student, teacher, tmp_path, capsys):
    record = load_model(student).run_config["student"]
    assert main(["info", "--model", str(student)]) == 0
    out = capsys.readouterr().out
    assert f"is a {K}-step student of {record['teacher']['name']}" in out
    assert f"Euler on its own {K}-step grid (tuned), guidance 1" in out
    assert record["teacher"]["sha256"][:12] in out
    assert main(["info", "--model", str(teacher)]) == 0
    assert "is not a distilled student" in capsys.readouterr().out
    assert main(["info", "--model", str(student), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["student"]["steps"] == K
    for argv in (["info"], ["info", str(tmp_path / "x.png"), "--model", str(student)],
                 ["info", "--model", str(tmp_path / "missing")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err and "\n" not in err and "Traceback" not in err


@pytest.fixture(scope="module")
def shipped(student, monkeypatch_module, tmp_path_factory):
    """The student exported as a built-in model named mnist-4step (hyphenated, as the shipped students will be),
    into a temporary models folder."""
    models = tmp_path_factory.mktemp("models")
    export_model(student, models / "mnist-4step")
    monkeypatch_module.setattr(ckpt_io, "BUILTIN_MODELS_DIR", models)
    return models / "mnist-4step"


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_a_hyphenated_builtin_student_is_found_by_name(shipped, sigmas, tmp_path, capsys):
    assert "mnist-4step" in ckpt_io.builtin_models()
    assert ckpt_io.resolve_checkpoint("mnist-4step") == shipped
    model = load_model("mnist-4step")
    assert model.name == "mnist-4step" and student_defaults(model).steps == K
    assert main(["sample", "--model", "mnist-4step", "--prompt", "3", "--n", "1", "--device", "cpu",
                 "--out", str(tmp_path / "img")]) == 0
    out = capsys.readouterr().out
    assert f"Euler, {K} steps ({K} NFE), guidance 1," in out
    assert out.split("sigmas: ")[1].splitlines()[0] == ", ".join(f"{s:.4g}" for s in sigmas)


def test_the_page_starts_a_student_at_its_own_defaults(shipped, teacher, sigmas, tmp_path):
    pytest.importorskip("fastapi", reason="the web extra (fastapi) is not installed")
    from fastapi.testclient import TestClient

    from diffuscope.web.app import create_app
    from diffuscope.web.lesson import load_entry
    from web_helpers import BASE, TOKEN, events, post

    entries = [load_entry("mnist-4step"), load_entry(str(teacher))]
    with TestClient(create_app(entries, tmp_path / "out", token=TOKEN), base_url=BASE) as client:
        listed = {m["name"]: m for m in client.get("/api/models").json()}
        assert "mnist-4step" in listed  # the page's model list offers the built-in student by its name
        page = listed["mnist-4step"]
        assert (page["default_steps"], page["default_sampler"], page["default_guidance"]) == (K, "Euler", 1.0)
        assert page["default_spacing"] == "tuned" and page["phases_steps"] == page["invert_steps"] == K
        assert page["exercise_samplers"] == ["Euler"] and K in page["exercise_steps"]
        assert page["student"]["steps"] == K and f"{K}-step student" in page["student"]["about"]
        plain = listed[str(teacher)]  # the teacher keeps the page's defaults
        assert (plain["default_steps"], plain["default_sampler"], plain["default_guidance"]) == (20, "iPNDM", 1.25)
        assert plain["student"] is None and plain["invert_steps"] == 50
        # a generation left to the defaults: K Euler steps on the student's own grid, unguided
        done = events(client, post(client, "/api/generate", {"model": "mnist-4step", "prompt": "3"}).json()["job"])[-1]
        assert done["type"] == "done", done
        assert (done["sampler"], done["nfe"]) == ("Euler", K) and done["sigmas"] == pytest.approx(sigmas, abs=1e-9)
        # the page's inversion and phases, left to the defaults, use the same K steps and grid
        inv = events(client, post(client, "/api/invert", {"model": "mnist-4step", "index": 0}).json()["job"])[-1]
        assert inv["type"] == "done", inv
        assert (inv["report"]["sampler"], inv["report"]["steps"]) == ("Euler", K)
        assert inv["report"]["grid"]["sigmas"] == pytest.approx(sigmas, abs=1e-9)
        ph = events(client, post(client, "/api/phases", {"model": "mnist-4step", "prompt": "3", "n": 2}).json()["job"])
        assert ph[-1]["type"] == "done", ph[-1]
        assert any(f"{K} steps of Euler" in e.get("message", "") for e in ph if e["type"] == "plan")
        assert f"{K} steps of Euler" in ph[-1]["summary"] and "guidance 1:" in ph[-1]["summary"]

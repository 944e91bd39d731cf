"""`diffuscope demo`: every part of the lesson in one self-contained report.html (on a tiny model, fast)."""

import json
import types

import pytest

from diffuscope.cli import main
from diffuscope.lesson import demo as demo_module
from diffuscope.lesson.demo import DemoConfig, run_demo


class SquareClock:
    """perf_counter reading 0, 1, 4, 9, ... (n^2 at its n-th call): every lap has its own known length."""

    def __init__(self):
        self.calls = 0

    def perf_counter(self) -> float:
        value = float(self.calls**2)
        self.calls += 1
        return value


@pytest.fixture(scope="module")
def demo_run(tiny_model, tmp_path_factory):
    """One demo on the tiny (EDM) model, shared by the tests that read what it wrote; the demo's clock is a
    SquareClock so its timings are known exactly."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    config = DemoConfig(model=str(tiny_model), steps=(2, 4), n=4, reverse_steps=4, phases_n=4, phases_points=2,
                        device="cpu")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(demo_module, "time", types.SimpleNamespace(perf_counter=SquareClock().perf_counter))
        report = run_demo(config, out, log=lambda _: None)
    return out, report


def test_demo_writes_one_report_with_every_part(demo_run):
    out, report = demo_run
    page = report.read_text()
    for title in ("Forward process", "Reverse process", "The exercise", "Phases"):
        assert title in page
    assert page.count("data:image/png;base64,") >= 6 and "data:image/gif;base64," in page
    assert "knee (EDM 3%)" in page
    # the report leads with the answers: a headline paragraph per sampler before any number, then its detail
    assert page.index("The answers") < page.index("Forward process")
    assert "<pre" not in page  # readable HTML, not preformatted blocks
    first_headline = page.index('<p class="headline"><strong>')
    assert first_headline < page.index('<p class="detail">Pixel RMSE') < page.index("knee (EDM 3%)")
    assert page.count('<p class="headline">') == 2 and "(DDIM).</strong></p>" in page
    assert "<strong>composition is decided early: " in page and "<figcaption>" in page
    import re

    assert not re.search(r"<img(?![^>]*alt=\"[^\"]+\")", page)  # every figure has alt text
    assert "The reverse process is the learned one" in page
    assert "Early steps (1-1) decide composition" in page and "late steps (4-4) add fine detail" in page
    for part in ("forward/forward.png", "reverse/reverse.gif", "sweep/report.json", "phases/summary.md"):
        assert (out / part).is_file(), part


def test_demo_times_each_part_between_its_laps(demo_run):
    """Clock readings 0 (start), 1, 4, 9, 16 (after each part), 25 (the end): each part is its own lap, not the
    time since the start, and the whole run is the last reading."""
    timing = json.loads((demo_run[0] / "demo.json").read_text())
    assert timing["part_s"] == {"forward": 1.0, "reverse": 3.0, "sweep": 5.0, "phases": 7.0}
    assert timing["elapsed_s"] == 25.0


def test_demo_forward_strip_of_a_continuous_model_moves_along_sigma(demo_run):
    """The tiny model is EDM: its strip moves along sigma (0, 0.2, 1, 5, sigma_max), read from the shared run."""
    from diffuscope.models.load import load_model

    out, report = demo_run
    sigma_max = load_model(json.loads((out / "demo.json").read_text())["model"]).schedule.sigma_max
    forward = json.loads((out / "forward" / "forward.json").read_text())
    assert forward["sigma"] == [0.0, 0.2, 1.0, 5.0, sigma_max] and forward["num_timesteps"] == 0
    page = report.read_text()
    assert "sigma =    0.2: shown x / sqrt(1 + sigma^2)" in page and "edm schedule" in page


def test_demo_forward_strip_of_a_discrete_model_moves_along_t(tmp_path):
    """A discrete VP (linear) model's strip moves along its t."""
    from dataclasses import replace

    from diffuscope.core.schedules import ScheduleConfig
    from diffuscope.training import train
    from helpers import tiny_config

    config = tiny_config(max_steps=2)
    config = replace(config, model=replace(config.model, schedule=ScheduleConfig(kind="linear")))
    train(config, tmp_path / "run")
    demo = DemoConfig(model=str(tmp_path / "run"), steps=(2, 3), samplers=("DDIM",), n=2, reverse_steps=2,
                      phases_n=2, phases_points=2, reference_steps=3, device="cpu")
    page = run_demo(demo, tmp_path / "demo", log=lambda _: None).read_text()
    forward = json.loads((tmp_path / "demo" / "forward" / "forward.json").read_text())
    assert forward["t"] == [0, 250, 500, 750, 1000] and forward["schedule"] == "linear"
    assert "t =  250: sqrt(alpha_bar)" in page


def test_demo_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep").write_text("x")
    assert main(["demo", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "file").write_text("x")  # the one --out rule of every command (outputs.prepare_out)
    assert main(["demo", "--out", str(tmp_path / "file")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("n", ["1", "0"])
def test_demo_rejects_bad_n(tmp_path, capsys, n):
    assert main(["demo", "--out", str(tmp_path / "d"), "--n", n]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1

"""`diffuscope demo`: every part of the lesson in one self-contained report.html (on a tiny model, fast)."""

import json

import pytest

from diffuscope.cli import main
from diffuscope.lesson.demo import DemoConfig, run_demo


def test_demo_writes_one_report_with_every_part(tmp_path, tiny_model):
    config = DemoConfig(model=str(tiny_model), steps=(2, 4), n=4, reverse_steps=4, phases_n=4, phases_points=2,
                        device="cpu")
    report = run_demo(config, tmp_path / "demo", log=lambda _: None)
    page = report.read_text()
    for title in ("Forward process", "Reverse process", "The exercise", "Phases"):
        assert title in page
    assert page.count("data:image/png;base64,") >= 6 and "data:image/gif;base64," in page
    assert "knee (EDM 3%)" in page
    # the report leads with the answers: one sentence per sampler before any metric table
    assert page.index("The answers") < page.index("Forward process")
    assert page.count("DDIM: ") >= 1 and "composition is decided early" in page
    for part in ("forward/forward.png", "reverse/reverse.gif", "sweep/report.json", "phases/summary.md"):
        assert (tmp_path / "demo" / part).is_file(), part
    timing = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert list(timing["part_s"]) == ["forward", "reverse", "sweep", "phases"]
    assert sum(timing["part_s"].values()) == pytest.approx(timing["elapsed_s"], abs=0.5)


@pytest.mark.parametrize("kind", ["edm", "linear"])
def test_demo_forward_strip_follows_the_models_schedule(tmp_path, kind):
    """A continuous (EDM) model's strip moves along sigma (0, 0.2, 1, 5, sigma_max); a discrete VP one along its t."""
    from dataclasses import replace

    from diffuscope.core.schedules import ScheduleConfig
    from diffuscope.training import train
    from helpers import tiny_config

    config = tiny_config(max_steps=2)
    config = replace(config, model=replace(config.model, schedule=ScheduleConfig(kind=kind)))
    train(config, tmp_path / "run")
    demo = DemoConfig(model=str(tmp_path / "run"), steps=(2, 3), samplers=("DDIM",), n=2, reverse_steps=2,
                      phases_n=2, phases_points=2, reference_steps=3, device="cpu")
    page = run_demo(demo, tmp_path / "demo", log=lambda _: None).read_text()
    forward = json.loads((tmp_path / "demo" / "forward" / "forward.json").read_text())
    if kind == "edm":
        sigma_max = config.model.schedule.sigma_max
        assert forward["sigma"] == [0.0, 0.2, 1.0, 5.0, sigma_max] and forward["num_timesteps"] == 0
        assert "sigma =    0.2: shown x / sqrt(1 + sigma^2)" in page and "edm schedule" in page
    else:
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

"""`diffuscope demo`: every part of the lesson in one self-contained report.html (on a tiny model, fast)."""

import json

import pytest

from diffuscope.cli import main
from diffuscope.demo import DemoConfig, run_demo


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

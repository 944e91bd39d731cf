"""Every command on a tiny Stable-Diffusion-layout pipeline folder (issue 21): sample (fp32 and --dtype bf16),
info and --from, sweep with text prompts, reverse, phases; and --dtype refused for diffuscope's own models."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffuscope.cli import main
from tiny_pipelines import save_text_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return str(save_text_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd"))


def test_sample_info_and_from(sd_folder, tmp_path, capsys):
    assert main(["sample", "--model", sd_folder, "--prompt", "cat, red", "--n", "2", "--steps", "3",
                 "--out", str(tmp_path / "s")]) == 0
    assert main(["info", str(tmp_path / "s" / "00001-1.png")]) == 0
    assert "cat, red" in capsys.readouterr().out
    assert main(["sample", "--from", str(tmp_path / "s" / "00001-1.png"), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "00000-1.png").read_bytes() == (tmp_path / "s" / "00001-1.png").read_bytes()
    assert main(["sample", "--model", sd_folder, "--prompt", "a cat", "--steps", "3", "--dtype", "bf16",
                 "--out", str(tmp_path / "bf16")]) == 0


def test_sweep_reverse_and_phases(sd_folder, tmp_path):
    assert main(["sweep", "--model", sd_folder, "--prompt", "a cat", "--prompt", "dog, run", "--steps", "2,4",
                 "--samplers", "DDIM", "--n", "4", "--reference-steps", "6", "--out", str(tmp_path / "sw")]) == 0
    report = json.loads((tmp_path / "sw" / "report.json").read_text())
    assert report["info"]["prompts"] == ["a cat", "dog, run"] and report["metric_groups"] == ["convergence"]
    assert main(["reverse", "--model", sd_folder, "--prompt", "a cat", "--steps", "3", "--show", "3",
                 "--out", str(tmp_path / "rev")]) == 0
    assert (tmp_path / "rev" / "reverse.gif").is_file()
    assert main(["phases", "--model", sd_folder, "--prompt", "a cat", "--steps", "3", "--n", "2", "--points", "2",
                 "--consistency-steps", "2,3", "--out", str(tmp_path / "ph")]) == 0


def test_dtype_is_for_pipelines(tmp_path, capsys):
    assert main(["sample", "--model", "mnist", "--prompt", "7", "--dtype", "fp16", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "applies to diffusers pipeline folders" in err
    assert not (tmp_path / "s").exists()

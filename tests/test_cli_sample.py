"""`diffuscope sample` / `info`: PNGs with parameters, bit-identical re-runs, one-line errors."""

import json

import numpy as np
import pytest
from PIL import Image

from diffuscope.cli import main


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_sample_writes_pngs_grid_and_reproduces_bit_identically(capsys, tmp_path, tiny_model):
    code, out, err = _run(capsys, "sample", "--model", tiny_model, "--prompt", "seven", "--sampler", "Euler",
                          "--steps", "6", "--seed", "42", "--n", "3", "--guidance", "2", "--out", tmp_path / "a")
    assert code == 0, err
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["00000-42.png", "00001-43.png", "00002-44.png", "grid.png"]
    code, out, _ = _run(capsys, "info", tmp_path / "a" / "00001-43.png")
    assert code == 0
    assert out.startswith("seven\nSteps: 6, Sampler: Euler, Schedule type: karras, CFG scale: 2, Seed: 43")
    # re-run from the PNG's own parameters: the same pixels
    code, _, err = _run(capsys, "sample", "--from", tmp_path / "a" / "00001-43.png", "--out", tmp_path / "b")
    assert code == 0, err
    again = np.asarray(Image.open(tmp_path / "b" / "00000-43.png"))
    assert np.array_equal(again, np.asarray(Image.open(tmp_path / "a" / "00001-43.png")))


def test_guidance_interval_is_recorded_and_reproduced(capsys, tmp_path, tiny_model):
    common = ["sample", "--model", tiny_model, "--prompt", "3", "--sampler", "Euler", "--steps", "6", "--seed", "5",
              "--n", "1", "--guidance", "3"]
    code, out, err = _run(capsys, *common, "--guidance-interval", "0.28,5.42", "--out", tmp_path / "a")
    assert code == 0, err
    assert "guidance 3 on (0.28, 5.42]" in out
    png = tmp_path / "a" / "00000-5.png"
    code, out, _ = _run(capsys, "info", png)
    assert "CFG scale: 3, Guidance interval: 0.28-5.42, Seed: 5" in out
    assert json.loads(_run(capsys, "info", "--json", png)[1])["guidance_interval"] == [0.28, 5.42]
    code, _, err = _run(capsys, "sample", "--from", png, "--out", tmp_path / "b")
    assert code == 0, err
    limited = np.asarray(Image.open(png))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b" / "00000-5.png")), limited)
    code, _, err = _run(capsys, *common, "--out", tmp_path / "c")  # guidance everywhere: another image
    assert code == 0, err
    assert json.loads(_run(capsys, "info", "--json", tmp_path / "c" / "00000-5.png")[1])["guidance_interval"] is None
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "c" / "00000-5.png")), limited)


def test_batch_size_does_not_change_images(capsys, tmp_path, tiny_model):
    for bs, out in ((1, "x"), (4, "y")):
        code, _, err = _run(capsys, "sample", "--model", tiny_model, "--prompt", "3", "--steps", "4", "--n", "4",
                            "--batch-size", bs, "--sampler", "Euler a", "--out", tmp_path / out)
        assert code == 0, err
    for name in ("00000-0.png", "00003-3.png"):
        a, b = (np.asarray(Image.open(tmp_path / d / name)) for d in ("x", "y"))
        assert np.array_equal(a, b)


def test_second_run_into_the_same_folder_overwrites_nothing(capsys, tmp_path, tiny_model):
    for _ in range(2):
        assert _run(capsys, "sample", "--model", tiny_model, "--prompt", "1", "--steps", "2", "--n", "2",
                    "--out", tmp_path / "o")[0] == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "00000-0.png", "00001-1.png", "00002-0.png", "00003-1.png", "grid-00001.png", "grid.png"]


def test_random_seed_is_reported(capsys, tmp_path, tiny_model):
    code, out, _ = _run(capsys, "sample", "--model", tiny_model, "--prompt", "1", "--steps", "2", "--n", "1",
                        "--seed", "-1", "--out", tmp_path / "r")
    assert code == 0
    seed = int(out.split("seed ")[1].split()[0])
    params = json.loads(_run(capsys, "info", "--json", next((tmp_path / "r").glob("0*.png")))[1])
    assert params["seed"] == seed


@pytest.mark.parametrize(
    "extra,pattern",
    [
        (["--sampler", "Euler b"], "unknown sampler 'Euler b'"),
        (["--steps", "0"], "positive integer"),
        (["--guidance", "-1"], "number >= 0"),
        (["--guidance-interval", "5,1"], "0 <= LO < HI"),
        (["--guidance-interval", "0.3"], "LO,HI"),
        (["--seed", "abc"], "-1 (random)"),
        (["--prompt", "eleven"], "unknown prompt"),
        (["--spacing", "trailing"], "karras, logsnr"),
    ],
)
def test_bad_input_one_line_exit_2(capsys, tmp_path, tiny_model, extra, pattern):
    argv = ["sample", "--model", tiny_model, "--prompt", "7", "--out", tmp_path / "o", *extra]
    code, _, err = _run(capsys, *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and pattern in err, err
    assert not (tmp_path / "o").exists()


def test_model_path_that_is_not_a_model(capsys, tmp_path):
    (tmp_path / "m").mkdir()
    code, _, err = _run(capsys, "sample", "--model", tmp_path / "m", "--prompt", "7", "--out", tmp_path / "o")
    assert code == 2 and "not a model" in err


def test_steps_beyond_T_for_a_discrete_model(capsys, tmp_path):
    from dataclasses import replace

    from diffuscope.core.schedules import ScheduleConfig
    from diffuscope.training import train
    from helpers import tiny_config

    cfg = tiny_config(max_steps=2)
    cfg = replace(cfg, model=replace(cfg.model, parametrization="eps", schedule=ScheduleConfig(kind="linear")))
    train(cfg, tmp_path / "eps")
    code, _, err = _run(capsys, "sample", "--model", tmp_path / "eps", "--prompt", "7", "--steps", "1001",
                        "--sampler", "DDPM", "--out", tmp_path / "o")
    assert code == 2 and "1..1000" in err
    code, _, err = _run(capsys, "sample", "--model", tmp_path / "eps", "--prompt", "7", "--steps", "1000",
                        "--sampler", "DDPM", "--n", "1", "--out", tmp_path / "o")
    assert code == 0, err


def test_info_on_a_plain_png(capsys, tmp_path):
    Image.new("L", (4, 4)).save(tmp_path / "p.png")
    code, _, err = _run(capsys, "info", tmp_path / "p.png")
    assert code == 2 and "no generation parameters" in err

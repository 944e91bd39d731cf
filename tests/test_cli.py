"""The command line: one-line errors with exit code 2 for bad input, and nothing overwritten."""

import json
import subprocess
import sys

import pytest

from diffuscope.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_usage_error(capsys, argv, pattern):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("diffuscope: error:")
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in err


def test_dry_run_prints_resolved_config(capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[train]\nlr = 0.0005\nmax_steps = 10\n[model.unet]\nbase_channels = 24\n')
    code, out, _ = run_cli(capsys, "train", "--data", "digits", "--out", str(tmp_path / "r"), "--config", str(cfg),
                           "--max-steps", "7", "--dry-run")
    assert code == 0
    resolved = json.loads(out)
    assert resolved["train"]["max_steps"] == 7  # the flag overrides the file
    assert resolved["train"]["lr"] == 0.0005
    assert resolved["model"]["unet"]["base_channels"] == 24
    assert resolved["data"]["name"] == "digits"
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "argv,pattern",
    [
        (["train", "--data", "imagenet", "--out", "X"], "unknown dataset 'imagenet'"),
        (["train", "--data", "digits", "--out", "X", "--max-steps", "0"], "positive integer"),
        (["train", "--data", "digits", "--out", "X", "--batch-size", "-4"], "positive integer"),
        (["train", "--data", "digits", "--out", "X", "--device", "tpu"], "invalid choice"),
        (["train", "--data", "digits"], "--out"),
        (["fly"], "invalid choice"),
    ],
)
def test_bad_flags(capsys, argv, pattern):
    assert_usage_error(capsys, argv, pattern)


def test_unknown_config_key(capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nmax_stepz = 10\n")
    assert_usage_error(capsys, ["train", "--data", "digits", "--out", str(tmp_path / "r"), "--config", str(cfg)],
                       "unknown config key [train] 'max_stepz'")


def test_bad_toml(capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train\n")
    assert_usage_error(capsys, ["train", "--data", "digits", "--out", str(tmp_path / "r"), "--config", str(cfg)],
                       "not valid TOML")


def test_folder_without_images(capsys, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("hi")
    assert_usage_error(capsys, ["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "r")], "no images")
    assert not (tmp_path / "r").exists()


def test_unreadable_image(capsys, tmp_path):
    (tmp_path / "data" / "cat").mkdir(parents=True)
    (tmp_path / "data" / "cat" / "a.png").write_bytes(b"not a png")
    assert_usage_error(capsys, ["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "r")], "a.png")


def test_size_not_supported_by_the_net(capsys, tmp_path):
    assert_usage_error(capsys, ["train", "--data", "mnist", "--image-size", "30", "--out", str(tmp_path / "r")],
                       "30")
    assert not (tmp_path / "r").exists()


def test_existing_run_folder_is_not_overwritten(capsys, tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "keep.txt").write_text("precious")
    assert_usage_error(capsys, ["train", "--data", "digits", "--out", str(run), "--max-steps", "2"], "not empty")
    assert (run / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in run.iterdir()) == ["keep.txt"]


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "diffuscope", "train", "--data", "nope", "--out", "x"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("diffuscope: error: unknown dataset 'nope'")


def test_sweep_and_demo_default_to_the_shared_guidance():
    """One default guidance for every command (diffuscope.core.defaults): a sweep must measure what `sample` makes."""
    from diffuscope.cli import build_parser
    from diffuscope.cli.sweep import build_config
    from diffuscope.core.defaults import DEFAULT_GUIDANCE
    from diffuscope.lesson.demo import DemoConfig
    from diffuscope.sweep import SweepConfig

    args = build_parser().parse_args(["sweep", "--model", "mnist", "--prompt", "7", "--out", "x"])
    assert build_config(args).guidance == DEFAULT_GUIDANCE == SweepConfig().guidance == DemoConfig().guidance


def test_samplers_lists_every_sampler_and_marks_the_default(capsys):
    from diffuscope.core.defaults import DEFAULT_SAMPLER
    from diffuscope.samplers import SAMPLERS, get_sampler

    code, out, _ = run_cli(capsys, "samplers")
    assert code == 0
    rows = {line[15:31].strip(): line for line in out.splitlines()[1:-1]}  # keyed by id (fixed columns)
    assert set(rows) == set(SAMPLERS)
    default_id = get_sampler(DEFAULT_SAMPLER).id
    assert [i for i, line in rows.items() if line.endswith("the default")] == [default_id]
    assert out.splitlines()[-1].startswith(f"defaults: {get_sampler(DEFAULT_SAMPLER).name}, ")


def test_closed_stdout_ends_quietly():
    """`diffuscope samplers | head -1`: a reader that goes away early gives exit 141 (128 + SIGPIPE), no traceback."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: the first write fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "diffuscope", "samplers"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr

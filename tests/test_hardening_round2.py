"""Regression tests for issue 29 ("nothing crashes, nothing lies, round two"): one per reproduced failure.

Each fails with its fix reverted: runs mixed in one folder, unbounded autoencoder sizes, guidance without a cap,
images and IDX files sized after they were read, memory limits that ignored the process's own, a reverse GIF that
grew with the steps, full disks as tracebacks or 0-byte files, undecodable prompts, unlisted tuned grids, escape
sequences printed raw, image numbers that collided.
"""

from __future__ import annotations

import errno
import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest
import torch

from diffuscope.checks import limits
from diffuscope.checks.errors import UsageError, one_line
from diffuscope.io import outputs
from diffuscope.io.checkpoint import BUILTIN_MODELS_DIR, list_checkpoints, read_manifest
from hardening_helpers import one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


# --- runs never mix -----------------------------------------------------------------------------------------------


def test_autoencoder_into_a_locked_run_folder_is_refused(capsys, tmp_path):
    run = tmp_path / "run"
    with outputs.RunLock(run):  # another autoencoder run training there right now
        one_line_error(capsys, ["autoencoder", "--data", "digits", "--out", str(run), "--max-steps", "1",
                                "--quiet"], pattern="in use")
    assert not (run / "checkpoints").exists() and not (run / "config.json").exists()


def test_tune_steps_into_a_locked_folder_is_refused(capsys, tmp_path):
    out = tmp_path / "tune"
    with outputs.RunLock(out):
        one_line_error(capsys, ["tune-steps", "--model", "mnist", "--steps", "2", "--seeds", "2", "--eval-seeds",
                                "0", "--fine-steps", "4", "--out", str(out)], pattern="in use")
    assert [p.name for p in out.iterdir()] == [outputs.LOCK]


def test_a_failed_locked_command_leaves_no_folder(capsys, tmp_path):
    one_line_error(capsys, ["tune-steps", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "t")])
    assert not (tmp_path / "t").exists()


# --- bounded before allocation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag, value", [("--base-channels", "100000"), ("--image-size", "100000"), ("--lr", "nan"),
                                         ("--lr", "inf"), ("--latent-channels", "100000"),
                                         ("--batch-size", "1000000000"), ("--threads", "100000")])
def test_autoencoder_sizes_are_bounded(capsys, tmp_path, flag, value):
    one_line_error(capsys, ["autoencoder", "--out", str(tmp_path / "run"), flag, value], pattern=flag)
    assert not (tmp_path / "run").exists()


def test_autoencoder_config_is_bounded_in_the_library_too(tmp_path):
    from dataclasses import replace

    from diffuscope.training.autoencoder import AutoencoderRunConfig, train_autoencoder

    config = AutoencoderRunConfig()
    for bad in (replace(config, model=replace(config.model, base_channels=100_000)),
                replace(config, train=replace(config.train, lr=float("nan"))),
                replace(config, data=replace(config.data, image_size=100_000))):
        with pytest.raises(UsageError):
            train_autoencoder(bad, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_invert_guidance_is_capped(capsys, tmp_path):
    one_line_error(capsys, ["invert", "--model", "mnist", "--image", "x.png", "--guidance", "1e12", "--out",
                            str(tmp_path / "o")], pattern="--guidance")


def _png_header_only(path: Path, w: int, h: int) -> None:
    def chunk(k, d):
        return struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("w, h", [(9000, 9000), (50000, 50000)])  # 81 Mpixel; a decompression bomb
def test_invert_image_is_bounded_before_decoding(capsys, tmp_path, w, h):
    f = tmp_path / "big.png"
    _png_header_only(f, w, h)
    one_line_error(capsys, ["invert", "--model", "mnist", "--image", str(f), "--out", str(tmp_path / "o")],
                   pattern="pixels")
    assert not (tmp_path / "o").exists()


def _idx_folder(tmp_path: Path, n: int, side: int, data: bool = False) -> Path:
    d = tmp_path / "idx"
    d.mkdir()
    head = bytes([0, 0, 8, 3]) + struct.pack(">3I", n, side, side)
    (d / "train-images-idx3-ubyte").write_bytes(head + (b"\0" * (n * side * side) if data else b""))
    (d / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", n) + b"\0" * n)
    return d


def test_idx_with_zero_images_is_one_line(capsys, tmp_path):
    d = _idx_folder(tmp_path, 0, 28, data=True)
    one_line_error(capsys, ["train", "--data", str(d), "--out", str(tmp_path / "o"), "--max-steps", "1"],
                   pattern="at least one image")


def test_idx_image_size_is_checked_from_the_header(capsys, tmp_path):
    d = _idx_folder(tmp_path, 4000, 512)  # 1 GiB of uint8 declared: refused before a byte of it is read
    one_line_error(capsys, ["train", "--data", str(d), "--out", str(tmp_path / "o"), "--max-steps", "1"],
                   pattern="512x512")


def test_memory_limit_is_the_least_of_ram_rlimit_and_cgroup(monkeypatch, tmp_path):
    import resource

    monkeypatch.setattr(limits, "_meminfo_available", lambda: 64 * 2**30)
    monkeypatch.setattr(resource, "getrlimit", lambda which: (3 * 2**30, resource.RLIM_INFINITY))
    monkeypatch.setattr(limits, "_proc_status_bytes", lambda key: 1 * 2**30)
    monkeypatch.setattr(limits, "CGROUP_ROOT", tmp_path)
    assert limits.available_memory() == 2 * 2**30  # RLIMIT_AS 3 GiB, 1 GiB mapped already
    (tmp_path / "memory.max").write_text(f"{2**30}\n")
    (tmp_path / "memory.current").write_text(f"{2**29}\n")
    assert limits.available_memory() == 2**29  # the cgroup's memory.max minus what it uses
    (tmp_path / "memory.max").write_text("max\n")
    assert limits.available_memory() == 2 * 2**30
    with pytest.raises(UsageError, match="limit"):
        limits.check_memory("a request", 2**30 + 1)


def test_a_long_reverse_gif_is_bounded():
    from diffuscope.lesson.phases import Trajectory
    from diffuscope.lesson.reverse import MAX_GIF_FRAMES, ReverseResult, gif_indices, save_reverse

    steps = 3 * MAX_GIF_FRAMES
    idx = gif_indices(steps)
    assert len(idx) == MAX_GIF_FRAMES and idx[0] == 0 and idx[-1] == steps - 1
    sig = torch.linspace(10, 0, steps + 1, dtype=torch.float64)
    x = torch.zeros(steps, 1, 1, 8, 8)
    traj = Trajectory(sig, x, x, torch.zeros(1, 1, 8, 8), "Euler")
    result = ReverseResult(traj, -1, "", "Euler", steps, 0, 1.0, steps)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        paths = save_reverse(result, d, show=4)
        meta = json.loads(paths[-1].read_text())
        from PIL import Image

        with Image.open(paths[1]) as gif:
            assert gif.n_frames <= MAX_GIF_FRAMES + 1
    assert meta["gif_frames"] == MAX_GIF_FRAMES + 1 and len(meta["gif_steps"]) == MAX_GIF_FRAMES


# --- a full disk: one line naming the path, nothing 0-byte ----------------------------------------------------------


class _FullFile:
    """A file whose writes fail as on a full disk (what is already open stays open, as on a real one)."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.fixture()
def full_disk(monkeypatch):
    """Every file opened for writing (open, Path.open, os.fdopen) refuses its writes with ENOSPC."""
    import builtins
    import os

    real_open, real_fdopen, real_path_open = builtins.open, os.fdopen, Path.open

    def writing(mode) -> bool:
        return any(c in str(mode) for c in "wax+")

    monkeypatch.setattr(builtins, "open", lambda f, mode="r", *a, **k: (
        _FullFile(real_open(f, mode, *a, **k)) if writing(mode) else real_open(f, mode, *a, **k)))
    monkeypatch.setattr(os, "fdopen", lambda fd, mode="r", *a, **k: (
        _FullFile(real_fdopen(fd, mode, *a, **k)) if writing(mode) else real_fdopen(fd, mode, *a, **k)))
    monkeypatch.setattr(Path, "open", lambda self, mode="r", *a, **k: (
        _FullFile(real_path_open(self, mode, *a, **k)) if writing(mode) else real_path_open(self, mode, *a, **k)))


def test_metrics_csv_on_a_full_disk_is_one_line_and_no_empty_file(tmp_path, full_disk):
    from diffuscope.training.rundir import MetricsLog

    with pytest.raises(OSError) as e:
        MetricsLog(tmp_path / "metrics.csv", 0)
    assert str(tmp_path / "metrics.csv") in outputs.os_error_line(e.value)
    assert "No space left" in outputs.os_error_line(e.value)
    assert list(tmp_path.iterdir()) == []  # neither a 0-byte metrics.csv nor a temp file


def test_json_on_a_full_disk_names_the_file(tmp_path, full_disk):
    from diffuscope.io.checkpoint import write_json_atomic

    with pytest.raises(OSError) as e:
        write_json_atomic(tmp_path / "config.json", {"a": 1})
    assert outputs.os_error_line(e.value) == f"cannot write {tmp_path / 'config.json'}: No space left on device"
    assert list(tmp_path.iterdir()) == []


def test_torch_save_failing_at_a_checkpoint_is_one_line_and_keeps_the_previous_one(tmp_path, monkeypatch):
    import diffuscope.io.checkpoint as ck
    from diffuscope.training import TrainingError, train
    from helpers import tiny_config

    run = tmp_path / "run"
    train(tiny_config(max_steps=4, checkpoint_every=2), run, stop_at=2)

    def full(*a, **k):  # what torch.save raises on a full disk
        raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 64 vs 0\n"
                           "PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(ck.torch, "save", full)
    with pytest.raises(TrainingError) as e:
        train(tiny_config(max_steps=4, checkpoint_every=2), run, resume="latest")
    assert "\n" not in str(e.value) and str(run / "checkpoints") in str(e.value)
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-0000002"]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp")]


def test_full_disk_during_a_command_names_the_file(capsys, tmp_path, full_disk):
    out = tmp_path / "o"
    line = one_line_error(capsys, ["forward", "--data", "digits", "--out", str(out)], code=1)
    assert "No space left on device" in line and str(out) in line
    assert not [p for p in out.rglob("*") if p.is_file()]  # nothing 0-byte or half written


# --- text ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["mnist", "emoji"])
@pytest.mark.parametrize("prompt, pattern", [("\udcff", "UTF-8"), ("7\x1b[31m", "control"), ("a\nb", "control"),
                                             ("x" * 1001, "longer")])
def test_bad_prompts_are_refused_before_any_model(capsys, tmp_path, model, prompt, pattern):
    line = one_line_error(capsys, ["sample", "--model", model, "--prompt", prompt, "--n", "1", "--steps", "2",
                                   "--out", str(tmp_path / "o")], pattern=pattern)
    assert "\x1b" not in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("cmd", [["reverse", "--model", "mnist"], ["phases", "--model", "mnist"],
                                 ["sweep", "--model", "mnist"], ["tune-steps", "--model", "mnist"],
                                 ["invert", "--model", "mnist", "--image", "x.png"], ["demo"]])
def test_every_prompt_flag_uses_the_one_check(capsys, tmp_path, cmd):
    one_line_error(capsys, [*cmd, "--prompt", "\udcff", "--out", str(tmp_path / "o")], pattern="UTF-8")


def test_a_png_prompt_with_control_characters_is_refused(capsys, tmp_path):
    from PIL import Image, PngImagePlugin

    f = tmp_path / "x.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("diffuscope", json.dumps({"schema": 1, "prompt": "7\x1b]0;owned\x07", "model_path": "mnist"}))
    Image.new("L", (28, 28)).save(f, pnginfo=info)
    one_line_error(capsys, ["sample", "--from", str(f), "--out", str(tmp_path / "o")], pattern="control")


def test_info_escapes_control_characters(capsys, tmp_path):
    from PIL import Image, PngImagePlugin

    f = tmp_path / "x.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\x1b[2J\x1b]0;owned\x07\nSteps: 2, Sampler: Euler, Seed: 1\x9b")
    Image.new("L", (8, 8)).save(f, pnginfo=info)
    code, out, _ = run_cli(capsys, "info", str(f))
    assert code == 0
    assert not any(c in out for c in "\x1b\x07\x9b")
    assert "\\x1b[2J" in out and out.count("\n") == 2  # the line break is kept, the escapes are shown


def test_error_lines_escape_control_characters():
    assert one_line("bad \x1b[31mred\x07 name\nnext") == "bad \\x1b[31mred\\x07 name next"


# --- integrity -----------------------------------------------------------------------------------------------------


@pytest.fixture()
def mnist_copy(tmp_path):
    dest = tmp_path / "mnist"
    shutil.copytree(BUILTIN_MODELS_DIR / "mnist", dest)
    return dest


def test_unlisted_tuned_grids_are_refused(capsys, tmp_path, mnist_copy):
    manifest = json.loads((mnist_copy / "manifest.json").read_text())
    del manifest["files"]["tuned_grids.json"]
    (mnist_copy / "manifest.json").write_text(json.dumps(manifest))
    one_line_error(capsys, ["sample", "--model", str(mnist_copy), "--prompt", "7", "--n", "1", "--steps", "10",
                            "--spacing", "tuned", "--out", str(tmp_path / "o")], pattern="not listed")
    with pytest.raises(UsageError, match="not listed"):
        read_manifest(mnist_copy)


def test_tuned_grids_changed_after_loading_are_refused(mnist_copy):
    from diffuscope.grids.store import TUNED_FILE, load_tuned

    load_tuned(mnist_copy)
    f = mnist_copy / TUNED_FILE
    raw = f.read_bytes()
    i = raw.index(b"0.", 200)
    f.write_bytes(raw[:i] + (b"9" if raw[i + 2:i + 3] != b"9" else b"8").join([raw[i:i + 2], raw[i + 3:]]))
    assert f.stat().st_size == len(raw)  # same size: only the sha256 tells
    with pytest.raises(UsageError, match="sha256"):
        load_tuned(mnist_copy)


# --- outputs -------------------------------------------------------------------------------------------------------


def test_sample_numbers_never_collide_after_a_deletion(capsys, tmp_path):
    out = tmp_path / "o"
    argv = ["sample", "--model", "mnist", "--prompt", "7", "--n", "2", "--steps", "2", "--out", str(out)]
    assert run_cli(capsys, *argv)[0] == 0
    (out / "00000-0.png").unlink()
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert sorted(p.name for p in out.glob("0*.png")) == ["00001-1.png", "00002-0.png", "00003-1.png"]


def test_next_image_number_is_one_past_the_largest(tmp_path):
    for name in ("00003-5.png", "00010-2.png", "grid.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert outputs.next_image_number(tmp_path) == 11
    assert outputs.next_image_number(tmp_path / "new") == 0


@pytest.mark.parametrize("cmd", [["tune-steps", "--model", "mnist"],
                                 ["invert", "--model", "mnist", "--image", "IMG"]])
def test_out_naming_a_file_is_refused_before_any_work(capsys, tmp_path, cmd):
    from PIL import Image

    Image.new("L", (28, 28)).save(tmp_path / "x.png")
    (tmp_path / "f").write_text("precious")
    argv = [str(tmp_path / "x.png") if a == "IMG" else a for a in cmd]
    one_line_error(capsys, [*argv, "--out", str(tmp_path / "f")], pattern="is a file")
    assert (tmp_path / "f").read_text() == "precious"


def test_invert_refuses_a_non_empty_out_like_every_command(capsys, tmp_path):
    from PIL import Image

    Image.new("L", (28, 28)).save(tmp_path / "x.png")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "mine.txt").write_text("precious")
    one_line_error(capsys, ["invert", "--model", "mnist", "--image", str(tmp_path / "x.png"), "--out",
                            str(tmp_path / "o")], pattern="not empty")


def test_writing_turns_any_write_error_into_one_line_naming_the_file(tmp_path):
    from safetensors import SafetensorError

    target = tmp_path / "w.safetensors"
    for error in (SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                                  '"No space left on device" })'),
                  RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"),
                  OSError(errno.ENOSPC, "No space left on device")):
        with pytest.raises(outputs.WriteFailed) as e, outputs.writing(target, remove_partial=True):
            target.write_bytes(b"")  # the 0-byte file a failed write leaves
            raise error
        line = outputs.os_error_line(e.value)
        assert line.startswith(f"cannot write {target}: ") and "\n" not in line
        assert not target.exists()
    with pytest.raises(ValueError), outputs.writing(target):  # not a write error: passes through unchanged
        raise ValueError("a bug")

"""Regression tests for issue 19, continued: wrong JSON types in files the program reads, a file system that says
no, and bounded error messages. Every bad input ends in ONE line with exit 2 or 1; nothing written is changed.
"""

from __future__ import annotations

import json

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.io.checkpoint import list_checkpoints, read_manifest
from diffuscope.models.load import load_model
from hardening_helpers import one_line_error, rehash

pytestmark = pytest.mark.usefixtures("one_thread")


# --- 4. wrong JSON types ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", [7, [1], {"model": 5}, {"model": []}, {"model": {}, "run": "x"},
                                 {"model": {"unet": 3}}, {"model": {"sigma_data": "half"}}])
def test_config_json_types(ckpt, doc):
    (ckpt / "config.json").write_text(json.dumps(doc))
    rehash(ckpt, "config.json")
    with pytest.raises(UsageError, match=r"config\.json"):
        load_model(ckpt)


@pytest.mark.parametrize("doc", [[], {"format": 2, "step": "twenty", "files": {}}, {"format": 2, "files": []},
                                 {"format": 2, "step": 1, "files": {"../etc/passwd": {"size": 1, "sha256": "0" * 64}}},
                                 {"format": 2, "step": 1, "files": {"config.json": 5}},
                                 {"format": 2, "step": 1, "files": {"config.json": {"size": 1, "sha256": "xyz"}}},
                                 {"format": "2", "step": 1, "files": {}}, {"format": 9, "step": 1, "files": {}},
                                 {"format": 2, "step": True, "files": {}}, "text", None])
def test_manifest_types(ckpt, doc):
    (ckpt / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(UsageError, match="manifest"):
        load_model(ckpt)


def test_manifest_must_list_the_weights(ckpt):
    manifest = json.loads((ckpt / "manifest.json").read_text())
    del manifest["files"]["ema.safetensors"]
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match=r"does not list ema\.safetensors"):
        load_model(ckpt)


def test_state_without_optimizer(ckpt):
    from diffuscope.io.checkpoint import load_training_state

    state = torch.load(ckpt / "state.pt", weights_only=True)
    del state["optimizer"]
    torch.save(state, ckpt / "state.pt")
    with pytest.raises(UsageError, match="optimizer"):
        load_training_state(ckpt)
    torch.save([1, 2], ckpt / "state.pt")
    with pytest.raises(UsageError, match="training state"):
        load_training_state(ckpt)


@pytest.mark.parametrize("chunk, pattern", [
    ("[1, 2]", "object"), ('"text"', "object"), ("null", "object"), ('{"schema": "1"}', "schema"),
    ('{"schema": 1, "guidance": "7"}', "guidance"), ('{"schema": 1, "guidance": 1e308}', "guidance"),
    ('{"schema": 1, "guidance_interval": "0.3-5"}', "interval"), ('{"schema": 1, "steps": 10.5}', "steps"),
    ('{"schema": 1, "steps": 1000000000}', "steps"), ('{"schema": 1, "sampler": 5}', "sampler"),
    ('{"schema": 1, "sampler": "  "}', "sampler"), ('{"schema": 99}', "newer"), ("{not json", "corrupt"),
    ('{"schema": 1, "seed": -5}', "seed"),
])
def test_png_json_chunk_types(capsys, tmp_path, chunk, pattern):
    from PIL import Image, PngImagePlugin

    f = tmp_path / "x.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("diffuscope", chunk)
    Image.new("L", (8, 8)).save(f, pnginfo=info)
    one_line_error(capsys, ["info", str(f)], pattern=pattern)
    one_line_error(capsys, ["sample", "--from", str(f), "--out", str(tmp_path / "o")], pattern=pattern)


# --- 5. the file system says no --------------------------------------------------------------------------------


def test_full_disk_during_sample_is_one_line_and_leaves_no_half_file(capsys, tmp_path, monkeypatch):
    import errno

    from PIL import Image

    real_save = Image.Image.save

    def full(self, fp, *a, **k):
        real_save(self, fp, *a, **k)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    out = tmp_path / "o"
    line = one_line_error(capsys, ["sample", "--model", "mnist", "--prompt", "3", "--steps", "2", "--n", "1",
                                   "--out", str(out)], code=1)
    assert "No space left on device" in line
    assert not [p for p in out.iterdir() if p.suffix == ".png"]  # the temp file was removed, nothing half-written


def test_full_disk_at_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    import errno

    import diffuscope.io.checkpoint as ck
    from diffuscope.training import TrainingError, train
    from helpers import tiny_config

    run = tmp_path / "run"
    train(tiny_config(max_steps=4, checkpoint_every=2), run, stop_at=2)
    real = ck.save_file

    def full(*a, **k):
        real(*a, **k)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck, "save_file", full)
    with pytest.raises(TrainingError, match="No space left"):
        train(tiny_config(max_steps=4, checkpoint_every=2), run, resume="latest")
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-0000002"]
    read_manifest(run / "checkpoints" / "step-0000002", required=("model.safetensors", "state.pt"))


# --- 6. error messages -----------------------------------------------------------------------------------------


def test_a_100k_prompt_is_not_echoed_whole(capsys, tmp_path):
    line = one_line_error(capsys, ["sample", "--model", "mnist", "--prompt", "p" * 100_000, "--out",
                                   str(tmp_path / "o")])
    assert len(line) < 400


def test_unknown_long_prompt_is_quoted_short(capsys, tmp_path):
    line = one_line_error(capsys, ["sample", "--model", "mnist", "--prompt", "q" * 900, "--steps", "2", "--n", "1",
                                   "--out", str(tmp_path / "o")], pattern="unknown")
    assert "q" * 81 not in line

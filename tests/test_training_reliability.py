"""Training never loses work: kill -9 and resume bit-identically, full disk, non-finite loss, pruning."""

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffuscope.io import checkpoint as ckpt_io
from diffuscope.io.checkpoint import file_entries, list_checkpoints
from diffuscope.models.load import load_model
from diffuscope.training import TrainingError, train
from helpers import tiny_config

TINY_TOML = """
[model.unet]
base_channels = 16
channel_mult = [1, 2]
num_res_blocks = 1
[train]
batch_size = 32
warmup_steps = 5
sample_every = 0
log_every = 1
"""


def _cli(run, *extra):
    return [sys.executable, "-m", "diffuscope", "train", "--data", "digits", "--out", str(run), "--quiet", *extra]


@pytest.fixture
def toml(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


# The killed run, held at a known point until it is killed: "mid-save" inside the checkpoint of step 9 (its
# model.safetensors written to a .tmp- folder, the rest not), "mid-step" inside training step 8. It says "held" on
# stdout when it gets there, so the kill always lands there, on a slow machine or a fast GPU alike.
HELD_RUN = """
import sys, threading
from diffuscope.io import checkpoint
from diffuscope.training import loop
where = sys.argv.pop(1)

def hold():
    print("held", flush=True)
    threading.Event().wait()  # until killed

real_save, real_batch = checkpoint.save_file, loop.training_batch

def save_file(tensors, filename, metadata=None):
    real_save(tensors, filename, metadata=metadata)
    if where == "mid-save" and (metadata or {}).get("step") == "9" and filename.endswith("model.safetensors"):
        hold()

def training_batch(data, images, conds, denoiser, t, step, null=None):
    out = real_batch(data, images, conds, denoiser, t, step, null)
    if where == "mid-step" and step + 1 == 8:
        hold()
    return out

checkpoint.save_file, loop.training_batch = save_file, training_batch
from diffuscope.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """The same 24 steps never interrupted: what a killed and resumed run must reproduce bit for bit."""
    root = tmp_path_factory.mktemp("full")
    (root / "tiny.toml").write_text(TINY_TOML)
    steps = ["--config", str(root / "tiny.toml"), "--max-steps", "24", "--checkpoint-every", "3"]
    subprocess.run(_cli(root / "full", *steps), check=True, capture_output=True, timeout=600)
    return root / "full", steps


@pytest.mark.parametrize("where", ["mid-save", "mid-step"])
def test_sigkill_mid_run_then_resume_is_bit_identical(tmp_path, full_run, where):
    full, steps = full_run
    args = _cli(tmp_path / "killed", *steps)[3:]  # after `python -m diffuscope`
    proc = subprocess.Popen([sys.executable, "-c", HELD_RUN, where, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        said = proc.stdout.readline()  # blocks until the run is held (or ends: then it says nothing)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert said == "held\n", f"the run ended without reaching {where}: {proc.stderr.read()[-2000:]}"
    ckpts = tmp_path / "killed" / "checkpoints"
    assert list_checkpoints(ckpts)[-1].name == "step-0000006"
    half_written = [p.name for p in ckpts.iterdir() if p.name.startswith(".tmp-")]
    assert bool(half_written) == (where == "mid-save"), half_written
    subprocess.run(_cli(tmp_path / "killed", *steps, "--resume", "latest"), check=True, capture_output=True,
                   timeout=600)
    assert not [p for p in ckpts.iterdir() if p.name.startswith(".tmp-")]  # stale temp files cleaned
    for name in ("model.safetensors", "ema.safetensors"):
        reference = (full / "checkpoints" / "step-0000024" / name).read_bytes()
        assert reference == (ckpts / "step-0000024" / name).read_bytes(), f"{name} differs after resuming ({where})"
    rows = (tmp_path / "killed" / "metrics.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(1, 25))  # no duplicated or missing rows


def test_keep_checkpoints(tmp_path):
    train(tiny_config(max_steps=8, checkpoint_every=2, keep_checkpoints=2), tmp_path / "r")
    assert [p.name for p in list_checkpoints(tmp_path / "r" / "checkpoints")] == ["step-0000006", "step-0000008"]


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    train(tiny_config(max_steps=6, checkpoint_every=3), tmp_path / "r", stop_at=3)
    before = (tmp_path / "r" / "checkpoints" / "step-0000003" / "ema.safetensors").read_bytes()
    real = ckpt_io.save_file

    def full_disk(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_io, "save_file", full_disk)
    with pytest.raises(TrainingError, match=r"step 6 \(No space left on device\).*step-0000003 is intact"):
        train(tiny_config(max_steps=6, checkpoint_every=3), tmp_path / "r", resume="latest")
    ckpts = tmp_path / "r" / "checkpoints"
    assert [p.name for p in ckpts.iterdir()] == ["step-0000003"]  # no half-written folder left behind
    assert (ckpts / "step-0000003" / "ema.safetensors").read_bytes() == before
    assert load_model(tmp_path / "r").step == 3


def _poison(monkeypatch, bad_steps):
    from diffuscope.training import loop

    real = loop.training_batch

    def batch(data, images, conds, denoiser, t, step, null=None):
        x0, sigma, noise, cond = real(data, images, conds, denoiser, t, step, null)
        if step + 1 in bad_steps:
            x0 = x0 * float("nan")
        return x0, sigma, noise, cond

    monkeypatch.setattr(loop, "training_batch", batch)


def test_non_finite_loss_stops_with_the_step_and_writes_nothing_bad(tmp_path, monkeypatch):
    train(tiny_config(max_steps=8, checkpoint_every=2), tmp_path / "r", stop_at=2)
    _poison(monkeypatch, {4})
    with pytest.raises(TrainingError, match="non-finite loss at step 4"):
        train(tiny_config(max_steps=8, checkpoint_every=2), tmp_path / "r", resume="latest")
    assert [p.name for p in list_checkpoints(tmp_path / "r" / "checkpoints")] == ["step-0000002"]
    model = load_model(tmp_path / "r", ema=False)
    assert all(torch.isfinite(p).all() for p in model.denoiser.net.parameters())


def test_bad_batches_can_be_skipped(tmp_path, monkeypatch):
    _poison(monkeypatch, {3, 5})
    result = train(tiny_config(max_steps=6, max_bad_batches=2), tmp_path / "r")
    model = load_model(result.checkpoint, ema=False)
    assert all(torch.isfinite(p).all() for p in model.denoiser.net.parameters())


def test_cli_refuses_non_safetensors_weights_in_one_line(tmp_path, toml):
    """A complete checkpoint (manifest and sizes right) whose weights are a pickle: resuming refuses to unpickle
    it, in one line, exit 2; nothing of the run is changed."""
    run = tmp_path / "r"
    train(tiny_config(max_steps=2), run)
    ckpt = run / "checkpoints" / "step-0000002"
    torch.save({"w": torch.zeros(3)}, ckpt / "model.safetensors")  # what a pickled .ckpt renamed looks like
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["files"].update(file_entries(ckpt, ["model.safetensors"]))  # size and sha256 of the new file
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    proc = subprocess.run(_cli(run, "--config", str(toml), "--max-steps", "4", "--resume", "latest"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diffuscope: error:"), lines
    assert "model.safetensors is a pickle/zip file, not safetensors: refusing to unpickle it" in lines[0]
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-0000002"]


def test_two_processes_match_one_process(tmp_path, toml):
    """torchrun, gloo on CPU: both replicas identical, equal to one process with the same global batch."""
    args = ["--config", str(toml), "--max-steps", "4", "--batch-size", "16", "--checkpoint-every", "4"]
    one = subprocess.run(_cli(tmp_path / "one", *args), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29533", "-m", "diffuscope", "train", "--data", "digits", "--out",
                          str(tmp_path / "two"), "--quiet", *args], capture_output=True, text=True, timeout=600,
                         env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    assert "2 processes, global batch 16 (8 per process)" in two.stdout
    assert "replicas identical after step 4: yes" in two.stdout
    a = load_model(tmp_path / "one", ema=False).denoiser.net.state_dict()
    b = load_model(tmp_path / "two", ema=False).denoiser.net.state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5), k
    # resume the 2-process run on 1 process: works across a change of process count
    resumed = subprocess.run(_cli(tmp_path / "two", "--config", str(toml), "--max-steps", "6", "--batch-size", "16",
                                  "--resume", "latest"), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert Path(tmp_path / "two" / "checkpoints" / "step-0000006").is_dir()

import csv
import math
from dataclasses import replace

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.io.checkpoint import load_training_state
from diffuscope.io.config import from_dict, to_dict
from diffuscope.models.load import load_model
from diffuscope.training import RunConfig, train
from diffuscope.training.config import resolve
from diffuscope.training.loop import batch_indices, lr_factor
from helpers import tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    config = tiny_config(max_steps=60)
    result = train(config, run / "r")
    return config, result


def test_run_folder_layout(trained):
    _, result = trained
    run = result.run_dir
    assert (run / "config.json").is_file()
    assert (run / "samples" / "step-0000060.png").is_file()
    ckpt = run / "checkpoints" / "step-0000060"
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "config.json", "ema.safetensors", "manifest.json", "model.safetensors", "state.pt"]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(5, 61, 5))
    assert set(rows[0]) == {"step", "loss", "lr", "grad_norm", "images_per_s", "elapsed_s"}


def test_loss_falls(trained):
    _, result = trained
    losses = [float(r["loss"]) for r in csv.DictReader((result.run_dir / "metrics.csv").open())]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:2]) / 2


def test_checkpoint_loads_back_with_identical_outputs(trained):
    _, result = trained
    a, b = load_model(result.run_dir), load_model(result.checkpoint)
    x, sigma, cond = torch.randn(3, 1, 8, 8), torch.tensor([0.2, 2.0, 20.0]), torch.tensor([1, 2, 10])
    with torch.no_grad():
        out = a.denoiser(x, sigma, cond)
        assert torch.equal(out, b.denoiser(x, sigma, cond))
        assert not torch.equal(out, load_model(result.run_dir, ema=False).denoiser(x, sigma, cond))


def test_resumed_run_is_bit_identical(tmp_path):
    full = train(tiny_config(max_steps=12), tmp_path / "full")
    train(tiny_config(max_steps=12), tmp_path / "split", stop_at=5)
    resumed = train(tiny_config(max_steps=12), tmp_path / "split", resume="latest")
    for name in ("model.safetensors", "ema.safetensors"):
        assert (full.checkpoint / name).read_bytes() == (resumed.checkpoint / name).read_bytes()
    # the clock carries over: elapsed_s counts the training time of the whole run, not of the last session
    saved = load_training_state(tmp_path / "split" / "checkpoints" / "step-0000005")["elapsed_s"]
    rows = (tmp_path / "split" / "metrics.csv").read_text().splitlines()[1:]
    elapsed = {int(r.split(",")[0]): float(r.split(",")[-1]) for r in rows}
    assert saved > 0 and elapsed[12] >= round(saved, 1) and elapsed[12] >= elapsed[5]


def test_refuses_to_overwrite_a_non_empty_run_folder(trained):
    config, result = trained
    before = (result.run_dir / "metrics.csv").read_bytes()
    with pytest.raises(UsageError, match="not empty"):
        train(config, result.run_dir)
    assert (result.run_dir / "metrics.csv").read_bytes() == before


def test_config_round_trips_through_json():
    config = tiny_config()
    assert from_dict(RunConfig, to_dict(config)) == config


def test_data_order_is_a_pure_function_of_seed_and_step():
    assert torch.equal(batch_indices(100, 32, 3, 7), batch_indices(100, 32, 3, 7))
    assert not torch.equal(batch_indices(100, 32, 3, 7), batch_indices(100, 32, 4, 7))


def test_lr_warmup_and_cosine():
    t = tiny_config(max_steps=100).train
    assert lr_factor(0, t) == pytest.approx(1 / t.warmup_steps)
    assert lr_factor(t.warmup_steps, t) == pytest.approx(1.0)
    assert lr_factor(100, t) == pytest.approx(t.lr_min_ratio)


@pytest.mark.parametrize(("max_steps", "flag", "expected"), [(550, None, 55), (3000, None, 200), (550, 7, 7)])
def test_default_warmup_is_a_tenth_of_the_run_at_most_200(max_steps, flag, expected, tmp_path):
    """Resolved after flags and TOML are merged, so --max-steps moves it, and written out as a number."""
    toml = tmp_path / "c.toml"
    toml.write_text("" if flag is None else f"[train]\nwarmup_steps = {flag}\n")
    config = resolve("mnist", toml, {"train": {"max_steps": max_steps}})
    assert config.train.warmup_steps == expected
    t = replace(config.train, warmup_steps=flag)  # a TrainConfig built in code resolves the same way
    assert lr_factor(expected - 1, t) == pytest.approx(1.0) and lr_factor(0, t) == pytest.approx(1 / expected)


@pytest.mark.usefixtures("one_thread")
def test_bf16_training_on_cpu(tmp_path):
    """precision bf16 (autocast) runs on the CPU: finite losses, float32 finite weights that differ from the fp32
    run's (autocast really engaged) yet stay close to them, and a checkpoint that loads and samples."""
    fp32 = train(tiny_config(max_steps=3, log_every=1, batch_size=16), tmp_path / "fp32")
    bf16 = train(tiny_config(max_steps=3, log_every=1, batch_size=16, precision="bf16"), tmp_path / "bf16")
    losses = [float(r["loss"]) for r in csv.DictReader((bf16.run_dir / "metrics.csv").open())]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    a = load_model(bf16.run_dir, ema=False).denoiser.net.state_dict()
    b = load_model(fp32.run_dir, ema=False).denoiser.net.state_dict()
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in a.values())
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    scale = max(float(b[k].abs().max()) for k in b)
    assert 0 < diff < 0.05 * scale, (diff, scale)
    model = load_model(bf16.run_dir)
    from diffuscope.generation.generate import GenerationRequest, generate

    images = generate(model, GenerationRequest(prompts=model.class_names[:4], steps=4, seed=0)).images
    reference = load_model(fp32.run_dir)
    same = generate(reference, GenerationRequest(prompts=reference.class_names[:4], steps=4, seed=0)).images
    assert torch.isfinite(images).all()
    assert float((images - same).abs().max()) < 1e-3  # 8e-5 measured: the bf16 run samples as the fp32 one

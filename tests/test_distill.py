"""`diffuscope distill` (issue 32): the Euler target, the teacher's fine solver, a tiny distillation that lowers the
student's K-step error, bit-identical resume, the run lock, one-line refusals and the student's sampling defaults."""

from __future__ import annotations

import json
import math

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.cli import main
from diffuscope.core.reference import GaussianDenoiser, GaussianMixtureDenoiser
from diffuscope.core.schedules import EDMSchedule, make_grid
from diffuscope.io import checkpoint as ckpt_io
from diffuscope.io.outputs import RunLock
from diffuscope.models.config import build_denoiser
from diffuscope.models.load import load_model
from diffuscope.models.student import student_defaults
from diffuscope.samplers import sample_euler
from diffuscope.samplers.base import euler_step
from diffuscope.training.distill import (
    DistillConfig,
    distill,
    euler_target,
    solve_interval,
    teacher_trajectory,
)
from student_helpers import distill_config, write_teacher

K = 3  # Karras at 3 steps on sigma_max 80: 80, 2.5, 0.002, 0 (at 2 steps one interval does all the work)


def _karras(steps: int) -> torch.Tensor:
    return make_grid(EDMSchedule(sigma_min=0.002, sigma_max=20.0), steps, "karras").sigmas


def test_euler_step_with_the_target_lands_on_the_teachers_next_state():
    means = torch.tensor([[-1.0, 0.5, 2.0], [1.5, -0.5, 0.0], [0.0, 2.0, -2.0]], dtype=torch.float64)
    teacher = GaussianMixtureDenoiser(means, torch.tensor([0.3, 0.5, 0.2]), classes=torch.tensor([0, 1, 1]))
    sigmas = _karras(3)
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * sigmas[0]
    cond = torch.tensor([0, 1] * 8)
    states = teacher_trajectory(teacher, x, sigmas, cond, substeps=4)
    assert states.shape == (4, 16, 3)
    for i in range(3):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        target = euler_target(states[i], states[i + 1], s, s_next)
        landed = euler_step(states[i], target, s, s_next)
        torch.testing.assert_close(landed, states[i + 1], rtol=0, atol=1e-9)
    # the teacher's own (exact) denoiser is not the target: one Euler step of it over the first interval misses x_1
    s, s_next = float(sigmas[0]), float(sigmas[1])
    assert (euler_step(states[0], teacher(states[0], s, cond), s, s_next) - states[1]).abs().max() > 1e-2
    assert torch.equal(euler_target(states[2], states[3], float(sigmas[2]), 0.0), states[3])  # D* = x_K at sigma 0
    # per-sample sigmas ([B]) give the same target
    per = euler_target(states[0], states[1], sigmas[0].expand(16), sigmas[1].expand(16))
    torch.testing.assert_close(per, euler_target(states[0], states[1], float(sigmas[0]), float(sigmas[1])))


def test_the_teachers_fine_solver_follows_the_exact_ode():
    teacher = GaussianDenoiser(torch.tensor([0.5, -1.0]), 0.4)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 20.0
    exact = teacher.ode_solution(x, 20.0, 1.3)
    err = {m: float((solve_interval(teacher, x, 20.0, 1.3, None, m) - exact).abs().max()) for m in (1, 8, 16)}
    assert err[16] < 2e-3 and err[16] < err[1] / 50
    assert err[8] / err[16] > 3  # Heun: second order in the sub-step


# --- a tiny teacher on disk (tests/student_helpers.py) ------------------------------------------------------------


def _config(teacher, **kw) -> DistillConfig:
    return distill_config(teacher, steps=K, **kw)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return write_teacher(tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def student_run(teacher, tmp_path_factory):
    run = tmp_path_factory.mktemp("student") / "run"
    distill(_config(teacher), run)
    return run


def _k_step_error(model, teacher_model, guidance: float, sigmas) -> float:
    """RMSE of ``model``'s K-step Euler samples (guidance 1) to the teacher's fine guided solution, on held-out
    noise (seed 999, never drawn by the run's chunks) for every class."""
    g = torch.Generator().manual_seed(999)
    x = torch.randn(40, 1, 8, 8, generator=g) * float(sigmas[0])
    cond = teacher_model.conditioner.encode([str(k % 10) for k in range(40)])
    guided = teacher_model.guided(guidance)
    reference = teacher_trajectory(guided, x, sigmas, cond, substeps=3)[-1]
    mine = sample_euler(model.denoiser, x, sigmas, cond=cond)
    return float((mine - reference).pow(2).mean().sqrt())


def test_distillation_lowers_the_students_k_step_error(teacher, student_run):
    student = load_model(student_run)
    start = load_model(teacher)  # the student's initialisation: the teacher itself, taking K Euler steps
    sigmas = torch.tensor(student.run_config["student"]["sigmas"], dtype=torch.float64)
    assert len(sigmas) == K + 1 and sigmas[-1] == 0
    before = _k_step_error(start, start, 1.25, sigmas)
    after = _k_step_error(student, start, 1.25, sigmas)
    print(f"K-step RMSE to the teacher: start {before:.4f}, student {after:.4f}")
    assert after < 0.6 * before, (before, after)
    losses = [float(r.split(",")[1]) for r in (student_run / "metrics.csv").read_text().splitlines()[1:]]
    assert len(losses) == 20 and math.isfinite(losses[-1])


def test_resume_is_bit_identical(teacher, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    distill(_config(teacher, max_steps=6, checkpoint_every=3, chunk_steps=2, chunk=32), whole)
    distill(_config(teacher, max_steps=6, checkpoint_every=3, chunk_steps=2, chunk=32), parts, stop_at=3)
    assert [p.name for p in ckpt_io.list_checkpoints(parts / "checkpoints")] == ["step-0000003"]
    distill(_config(teacher, max_steps=6, checkpoint_every=3, chunk_steps=2, chunk=32), parts, resume="latest")
    for name in ("model.safetensors", "ema.safetensors", "tuned_grids.json"):
        a = (whole / "checkpoints" / "step-0000006" / name).read_bytes()
        assert a == (parts / "checkpoints" / "step-0000006" / name).read_bytes(), name

    def loss_column(run):
        return [r.split(",")[:2] for r in (run / "metrics.csv").read_text().splitlines()]

    assert loss_column(whole) == loss_column(parts)
    with pytest.raises(UsageError, match="batch_size was 32"):  # a resumed run keeps its recorded settings
        distill(_config(teacher, max_steps=8, batch_size=16, chunk=32, chunk_steps=2), parts, resume="latest")
    # the command line: flags left out keep the run's own values (chunk 32, not the default 256)
    assert main(["distill", "--model", str(teacher), "--steps", str(K), "--out", str(parts), "--resume", "latest",
                 "--max-steps", "7", "--quiet"]) == 0
    assert [p.name for p in ckpt_io.list_checkpoints(parts / "checkpoints")][-1] == "step-0000007"


def test_a_resumed_run_that_extends_max_steps_keeps_its_warm_up(teacher, tmp_path):
    run = tmp_path / "run"
    distill(_config(teacher, max_steps=30, chunk=16, chunk_steps=50), run, stop_at=2)  # warm-up 3 steps
    distill(_config(teacher, max_steps=300, chunk=16, chunk_steps=50), run, resume="latest", stop_at=3)
    assert json.loads((run / "config.json").read_text())["distill"]["warmup_steps"] == 3
    rows = [r.split(",") for r in (run / "metrics.csv").read_text().splitlines()[1:]]
    # the rate logged after each step (the next step's): warm-up 3 -> 2/3, 1, 1 (with 30 it would be 4/30 at step 3)
    assert [float(r[2]) for r in rows] == pytest.approx([5e-3 * 2 / 3, 5e-3, 5e-3], rel=1e-5)


def test_a_second_run_into_the_same_folder_is_refused(teacher, tmp_path, student_run, capsys):
    run = tmp_path / "run"
    with RunLock(run), pytest.raises(UsageError, match="in use by another training process"):
        distill(_config(teacher, max_steps=2), run)
    assert main(["distill", "--model", str(teacher), "--steps", "2", "--out", str(student_run)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err


@pytest.mark.parametrize("args, says", [
    (["--steps", "0"], "argument --steps: must be a positive integer"),
    (["--steps", "four"], "argument --steps"),
    (["--steps", "4", "--spacing", "wiggly"], "argument --spacing: invalid choice"),
    (["--steps", "4", "--substeps", "0"], "argument --substeps"),
    (["--steps", "4", "--lr", "nan"], "argument --lr"),
])
def test_bad_flags_are_one_line_exit_2(args, says, tmp_path, capsys):
    assert main(["distill", "--model", "mnist", *args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "\n" not in err and not (tmp_path / "run").exists()


def test_a_missing_teacher_is_one_line_and_makes_no_folder(tmp_path, capsys):
    assert main(["distill", "--model", str(tmp_path / "nope"), "--steps", "4", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "model not found" in err and "\n" not in err and not (tmp_path / "run").exists()


def test_a_diffusers_pipeline_is_refused_before_any_work(tmp_path, capsys):
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    assert main(["distill", "--model", str(pipe), "--steps", "4", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "diffusers pipeline" in err and "\n" not in err and not (tmp_path / "run").exists()


def test_the_student_is_a_model_that_samples_with_its_own_grid(teacher, student_run, tmp_path, capsys):
    student = load_model(student_run)
    ckpt = student.path
    record = student.run_config["student"]
    assert record["teacher"]["sha256"] == ckpt_io.read_manifest(ckpt_io.resolve_checkpoint(teacher))["files"][
        "ema.safetensors"]["sha256"]
    assert record["teacher"]["guidance"] == 1.25 and record["guidance"] == 1.0
    assert "tuned_grids.json" in ckpt_io.read_manifest(ckpt)["files"]
    tuned = json.loads((ckpt / "tuned_grids.json").read_text())
    assert tuned["grids"]["euler"][str(K)] == record["sigmas"]
    defaults = student_defaults(student)
    assert (defaults.steps, defaults.sampler, defaults.spacing, defaults.guidance) == (K, "Euler", "tuned", 1.0)
    assert student_defaults(load_model(teacher)) is None

    assert main(["sample", "--model", str(student_run), "--prompt", "3", "--n", "2", "--device", "cpu",
                 "--out", str(tmp_path / "img")]) == 0
    out = capsys.readouterr().out
    assert f"Euler, {K} steps ({K} NFE), guidance 1," in out
    assert out.split("sigmas: ")[1].splitlines()[0] == ", ".join(f"{s:.4g}" for s in record["sigmas"])
    # another step count falls back to the model's default grid (the student's own exists only at K steps)
    assert main(["sample", "--model", str(student_run), "--prompt", "3", "--n", "1", "--steps", "4",
                 "--device", "cpu", "--out", str(tmp_path / "img3")]) == 0
    assert "Euler, 4 steps" in capsys.readouterr().out
    # the sweep takes the same defaults: K steps, Euler on the student's own grid, guidance 1
    assert main(["sweep", "--model", str(student_run), "--prompt", "all", "--out", str(tmp_path / "sweep"),
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"Euler, steps {K} (tuned): sigmas " in out and '"guidance": 1.0' in out and "DDIM" not in out
    # reverse runs on it, unguided by default (the guidance is distilled into the student)
    assert main(["reverse", "--model", str(student_run), "--prompt", "3", "--steps", str(K), "--show", str(K),
                 "--out", str(tmp_path / "rev")]) == 0
    assert json.loads((tmp_path / "rev" / "reverse.json").read_text())["guidance"] == 1.0


def test_a_latent_text_teacher_gives_a_student_that_carries_its_codec(tmp_path, capsys, one_thread):
    """Latent + text conditioning: the teacher's autoencoder travels into every student checkpoint (listed in the
    manifest, byte-identical) and the student samples text prompts, decoded to pixels."""
    from diffuscope.models.config import ModelConfig
    from diffuscope.nets import UNetConfig
    from diffuscope.nets.autoencoder import AutoencoderConfig
    from diffuscope.nets.codec import CODEC_FILES, CODEC_WEIGHTS, load_codec
    from diffuscope.training.autoencoder import (
        AutoencoderRunConfig,
        AutoencoderTrainConfig,
        levels_for,
        train_autoencoder,
    )
    from diffuscope.training.config import DataConfig

    mult, blocks = levels_for(1)  # 8x8x1 digits -> 2x8x8 latents
    ae = AutoencoderConfig(image_size=8, in_channels=1, latent_channels=2, base_channels=8, channel_mult=mult,
                           num_res_blocks=blocks)
    t = AutoencoderTrainConfig(max_steps=1, batch_size=8, warmup_steps=1, eval_every=0, checkpoint_every=1)
    train_autoencoder(AutoencoderRunConfig(DataConfig(name="digits"), ae, t), tmp_path / "ae", progress=False)
    codec = load_codec(tmp_path / "ae")
    unet = UNetConfig(in_channels=2, image_size=8, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                      attention_resolutions=(8,), num_heads=1, text_dim=384)
    model_config = ModelConfig(unet=unet, conditioning="text", text_encoder="all-MiniLM-L6-v2", sigma_data=1.0,
                               class_names=("a zero", "a seven"), autoencoder=str(codec.path))
    torch.manual_seed(0)
    denoiser = build_denoiser(model_config)
    ckpt_io.save_checkpoint(tmp_path / "teacher" / "checkpoints", 1, model=denoiser.net, ema=denoiser.net,
                            model_config=model_config, run_config={}, state={"step": 1}, beside=(codec,))
    distill(_config(tmp_path / "teacher", max_steps=2, chunk=4, batch_size=4, substeps=1), tmp_path / "run")

    student = load_model(tmp_path / "run")
    assert student.is_latent and student.conditioner.kind == "text" and student.sample_shape == (2, 8, 8)
    files = ckpt_io.read_manifest(student.path)["files"]
    teacher_files = ckpt_io.read_manifest(ckpt_io.resolve_checkpoint(tmp_path / "teacher"))["files"]
    assert set(CODEC_FILES) <= set(files)
    assert files[CODEC_WEIGHTS]["sha256"] == teacher_files[CODEC_WEIGHTS]["sha256"]  # the very same autoencoder
    assert main(["sample", "--model", str(tmp_path / "run"), "--prompt", "a seven", "--n", "1", "--device", "cpu",
                 "--out", str(tmp_path / "img")]) == 0
    assert f"Euler, {K} steps" in capsys.readouterr().out


def test_dry_run_prints_the_config_and_the_teacher_cost_and_writes_nothing(tmp_path, capsys):
    assert main(["distill", "--model", "mnist", "--steps", "4", "--substeps", "2", "--max-steps", "100",
                 "--chunk-steps", "30", "--out", str(tmp_path / "run"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert '"steps": 4' in out and "4 chunk(s) x 256 trajectories x 15 NFE" in out  # 4 x 2 x 2 - 1
    assert not (tmp_path / "run").exists()


def test_a_damaged_student_record_is_one_line(student_run, tmp_path, capsys):
    import shutil

    from hardening_helpers import rehash

    ckpt = tmp_path / "ckpt"
    shutil.copytree(ckpt_io.resolve_checkpoint(student_run), ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["run"]["student"]["steps"] = 0
    (ckpt / "config.json").write_text(json.dumps(config))
    rehash(ckpt, "config.json")  # a consistent manifest: the record itself must be checked
    assert main(["sample", "--model", str(ckpt), "--prompt", "3", "--n", "1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "run.student: steps must be an integer in 1..10000, got 0" in err and "\n" not in err

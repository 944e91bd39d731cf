"""The shipped 4-step students (`--model mnist-4step`, `--model emoji-4step`; issue 32, docs/distillation.md): each
is a student of the shipped teacher (its weights' sha256), made by the recipe of scripts/train_students.sh, samples
at 4 Euler steps on its own grid with guidance 1 by default, draws the prompted digit / emoji there, and lands
near the teacher's converged images from the same noise (mnist: nearer than the teacher's own 4 Euler steps)."""

import re
from pathlib import Path

import pytest
import torch

from diffuscope.generation.generate import GenerationRequest, generate
from diffuscope.io.checkpoint import builtin_models
from diffuscope.io.checkpoint import sha256_file as sha256_of
from diffuscope.metrics.evaluation import Evaluator
from diffuscope.models.load import load_model
from diffuscope.models.student import resolve_sampling, student_defaults

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [("mnist", "mnist-4step"), ("emoji", "emoji-4step")]
pytestmark = pytest.mark.skipif(not {"mnist-4step", "emoji-4step"} <= set(builtin_models()),
                                reason="the shipped students are not installed")


def recipe_flags(teacher: str) -> dict[str, str]:
    """The flags scripts/train_students.sh gives `distill --model TEACHER`."""
    script = (ROOT / "scripts" / "train_students.sh").read_text()
    line = re.search(rf'^distil {teacher} .*(?:\\\n.*)?', script, re.M).group(0)
    return dict(re.findall(r"--([a-z-]+) (\S+)", line))


def at_defaults(model, prompts, seed: int = 0):
    """The images `diffuscope sample` makes with no --steps/--sampler/--guidance."""
    chosen = resolve_sampling(model, sampler=None, steps=None, spacing=None, guidance=None)
    return generate(model, GenerationRequest(prompts=tuple(prompts), sampler=chosen.sampler, steps=chosen.steps,
                                             spacing=chosen.spacing, grid=chosen.grid(model),
                                             guidance=chosen.guidance, seed=seed)).images.clamp(-1, 1)


@pytest.mark.parametrize("teacher_name, name", PAIRS)
def test_a_shipped_student_is_the_recipes_student_of_the_shipped_teacher(teacher_name, name):
    student, teacher = load_model(name), load_model(teacher_name)
    record = student_defaults(student)
    assert (record.steps, record.sampler, record.spacing, record.guidance) == (4, "Euler", "tuned", 1.0)
    assert student.run_config["student"]["teacher"]["sha256"] == sha256_of(teacher.path / "ema.safetensors")
    assert student.image_shape == teacher.image_shape and student.class_names == teacher.class_names
    run, flags = student.run_config["distill"], recipe_flags(teacher_name)
    assert run["teacher"] == teacher_name and run["steps"] == 4
    assert "--steps 4" in (ROOT / "scripts" / "train_students.sh").read_text()
    # trained for the recipe's --max-steps (the run was started with a larger one and stopped at that checkpoint:
    # the warm-up, 100 steps, and the constant LR after it do not depend on --max-steps; docs/distillation.md)
    assert student.step == int(flags["max-steps"]) and run["warmup_steps"] == 100
    for flag in ("substeps", "chunk", "chunk-steps"):
        assert run[flag.replace("-", "_")] == int(flags[flag]), flag
    assert run["lr"] == float(flags["lr"])
    assert sum(f.stat().st_size for f in student.path.iterdir()) <= 30 * 2**20


# ratio: the student's RMSE to the converged teacher over the teacher's own 4 Euler steps' (measured on these
# images: mnist 0.62; emoji 1.03, no nearer: docs/benchmarks.md "Distilled students")
@pytest.mark.parametrize("teacher_name, name, prompts, least, ratio", [
    ("mnist", "mnist-4step", [str(d) for d in range(10)] * 2, 18, 0.75),
    ("emoji", "emoji-4step", ["red heart", "palm tree", "crying cat", "red apple", "sun", "rocket"], 5, 1.15)])
def test_a_shipped_student_draws_the_prompt_at_4_steps_near_the_converged_teacher(teacher_name, name, prompts,
                                                                                  least, ratio):
    student, teacher = load_model(name), load_model(teacher_name)
    judge = Evaluator.for_model(teacher)
    images = at_defaults(student, prompts)
    found = judge.classify(images)
    wanted = (torch.tensor([int(p) for p in prompts]) if judge.labels_for(prompts) is None
              else judge.labels_for(prompts))
    assert int((found == wanted).sum()) >= least, found
    guidance = student.run_config["student"]["teacher"]["guidance"]
    converged = generate(teacher, GenerationRequest(prompts=tuple(prompts), sampler="Heun", steps=25, seed=0,
                                                    guidance=guidance, batch_invariant=False)).images.clamp(-1, 1)
    teacher_4 = generate(teacher, GenerationRequest(prompts=tuple(prompts), sampler="Euler", steps=4, seed=0,
                                                    guidance=guidance, batch_invariant=False)).images.clamp(-1, 1)
    rmse = {k: float(((v - converged) ** 2).mean().sqrt()) for k, v in (("student", images), ("teacher", teacher_4))}
    assert rmse["student"] < ratio * rmse["teacher"] and rmse["student"] < 0.15, rmse

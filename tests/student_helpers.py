"""A tiny teacher and its distilled student on disk, for the tests of `distill` (test_distill.py) and of the student
as a model like any other (test_student.py)."""

import torch

from diffuscope.io import checkpoint as ckpt_io
from diffuscope.models.config import build_denoiser, fit_to_data
from diffuscope.training.distill import DistillConfig, distill
from helpers import tiny_config


def write_teacher(folder):
    """A tiny untrained class-conditional 8x8 model as a checkpoint; its zero-initialised layers get small random
    weights, so its ODE is not the trivial Gaussian one."""
    config = tiny_config()
    model_config = fit_to_data(config.model, image_size=8, channels=1, class_names=tuple("0123456789"))
    torch.manual_seed(0)
    denoiser = build_denoiser(model_config)
    with torch.no_grad():
        for p in denoiser.net.parameters():
            if p.ndim > 1 and not p.abs().sum():
                p.normal_(0, 0.05)
    ckpt_io.save_checkpoint(folder / "checkpoints", 1, model=denoiser.net, ema=denoiser.net,
                            model_config=model_config, run_config={"data": {"name": "digits"}}, state={"step": 1})
    return folder


def distill_config(teacher, *, steps: int, **kw) -> DistillConfig:
    options = {"steps": steps, "substeps": 3, "batch_size": 32, "lr": 5e-3, "chunk": 64, "chunk_steps": 5,
               "max_steps": 20, "checkpoint_every": 10, "log_every": 1, "ema_decay": 0.9, "device": "cpu",
               "threads": 1, **kw}  # one thread: the test machine is shared (2 threads ran 14x slower)
    return DistillConfig(teacher=str(teacher), **options)


def quick_student(teacher, run, *, steps: int = 3, spacing: str = "logsnr"):
    """A student of ``teacher`` after 2 optimizer steps on 8 trajectories: no good sampler, but a real student run
    (its record, its grid in tuned_grids.json) in well under a second of distilling. Its grid is the teacher's
    ``spacing`` (logsnr: not the model's default Karras formula, so a test sees which grid was used)."""
    distill(distill_config(teacher, steps=steps, substeps=1, batch_size=8, chunk=8, chunk_steps=2, max_steps=2,
                           checkpoint_every=2, spacing=spacing), run)
    return run

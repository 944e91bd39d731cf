"""Judging a text model by retrieval (evaluation.py + metrics/retrieval.RetrievalJudge): for a data set with one
real image per prompt (emoji), "accuracy vs prompt" is retrieval top-1. Exact oracle denoisers make it exact: a
model that draws each prompt's own image scores 1, one that draws another prompt's scores 0, through the sweep and
the phase measures that every command uses."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from PIL import Image

from diffuscope.core.conditioning import TEXT_ENCODERS, TextConditioner, register_text_encoder
from diffuscope.core.model import DiffusionModel
from diffuscope.core.schedules import EDMSchedule
from diffuscope.metrics.evaluation import Evaluator
from diffuscope.metrics.retrieval import RetrievalJudge
from test_seams import trigram_encoder

COLOURS = {"red square": (255, 0, 0), "green square": (0, 255, 0), "blue square": (0, 0, 255),
           "family man woman boy": (255, 255, 0)}


@pytest.fixture
def folder(tmp_path):
    """One 8x8 image per class: the emoji layout (each prompt names exactly one image)."""
    for name, rgb in COLOURS.items():
        (tmp_path / "data" / name).mkdir(parents=True)
        pixels = np.full((8, 8, 3), 255, dtype=np.uint8)
        pixels[2:6, 2:6] = rgb
        Image.fromarray(pixels).save(tmp_path / "data" / name / "0.png")
    return tmp_path / "data"


@pytest.fixture
def encoder():
    register_text_encoder("toy-trigram-ev", lambda: TextConditioner(trigram_encoder, "toy-trigram-ev"))
    yield TEXT_ENCODERS["toy-trigram-ev"]()
    TEXT_ENCODERS.pop("toy-trigram-ev", None)


@dataclass
class OracleDenoiser:
    """D(x, sigma, cond) = the real image of the prompt whose pooled text vector the condition holds, shifted by
    ``offset`` prompts (0: the faithful model; 1: always another prompt's image)."""

    images: torch.Tensor
    pooled: torch.Tensor
    offset: int = 0
    schedule: EDMSchedule = field(default_factory=EDMSchedule)

    def __call__(self, x, sigma, cond=None):
        if cond is None:  # the unconditional (null) prediction: the first image
            return self.images[:1].expand(len(x), -1, -1, -1).to(x.dtype)
        which = torch.cdist(cond.pooled.float(), self.pooled.float()).argmin(1)
        return self.images[(which + self.offset) % len(self.images)].to(x.dtype)


def oracle_model(folder, encoder, offset: int) -> DiffusionModel:
    from diffuscope.data import load_dataset

    data = load_dataset(str(folder), split="all", image_size=8, channels=3)
    pooled = trigram_encoder(list(data.class_names))[2]
    denoiser = OracleDenoiser(data.images, pooled, offset)
    return DiffusionModel(denoiser, encoder, (3, 8, 8), name=f"oracle+{offset}",
                          run_config={"data": {"name": str(folder)}})


def test_the_judge_retrieves_the_nearest_real_image(folder):
    from diffuscope.data import load_dataset

    data = load_dataset(str(folder), split="all", image_size=8, channels=3)
    judge = RetrievalJudge(data.images, data.class_names, "toy")
    assert judge.predict(data.images).tolist() == [0, 1, 2, 3] and judge.ceiling_top1 == 1.0
    assert judge.predict(data.images.flip(0)).tolist() == [3, 2, 1, 0]
    assert judge.features(data.images).shape == (4, 3 * 16 * 16)
    with pytest.raises(Exception, match="3x8x8"):
        judge.check_images(torch.zeros(1, 1, 8, 8))


def test_a_text_model_on_one_image_per_prompt_is_judged_by_retrieval(folder, encoder):
    ev = Evaluator.for_model(oracle_model(folder, encoder, 0))
    assert ev.is_retrieval and ev.describe()["kind"] == "retrieval"
    if ev.describe()["features"].startswith("EfficientNet"):  # colour: FD/KID in ImageNet features
        assert ev.features(torch.zeros(2, 3, 8, 8)).shape == (2, 1280)
    assert ev.labels_for(["blue square", "family: man, woman, boy"]).tolist() == [0, 1]  # sorted class folders
    assert ev.labels_for(["a dragon"]) is None
    sets = ev.real_sets(torch.tensor([0, 0, 2]))
    assert torch.equal(sets.reference, sets.stand_in) and sets.reference.shape == (3, 3, 8, 8)


@pytest.mark.parametrize("offset, accuracy", [(0, 1.0), (1, 0.0)])
def test_sweep_accuracy_is_retrieval_top1(folder, encoder, offset, accuracy):
    from diffuscope.sweep import SweepConfig, sweep

    model = oracle_model(folder, encoder, offset)
    result = sweep(model, SweepConfig(steps=(2, 3), samplers=("Euler",), prompts=("red square", "blue square"),
                                      n=4, reference_steps=4, guidance=1.0))
    assert result.groups == ("accuracy", "convergence")  # the default for a retrieval judge
    assert [c.metrics["accuracy"] for c in result.cells] == [accuracy, accuracy]
    assert result.info["classifier"]["kind"] == "retrieval"
    unknown = sweep(model, SweepConfig(steps=(2,), samplers=("Euler",), prompts=("a dragon",), n=2,
                                       reference_steps=4, guidance=1.0))
    assert unknown.groups == ("convergence",) and "no real image" in " ".join(unknown.notes)


def test_phases_judge_identity_by_retrieval(folder, encoder):
    from diffuscope.lesson.phases_report import PhasesConfig, measure_phases

    config = PhasesConfig(prompt="green square", steps=3, n=2, points=2, consistency_steps=(2, 3), guidance=1.0)
    _, commit, _, notes = measure_phases(oracle_model(folder, encoder, 0), config)
    assert commit.keep is not None and all(k == 1.0 for k in commit.keep)
    assert any("identity decided by retrieval" in n for n in notes)

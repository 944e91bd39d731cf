"""One evaluation path: the quality bar (metrics.floor.split_real), the Evaluator and the sweep choose the same real
images for the same prompts, and see the same classifier."""

import pytest
import torch

from diffuscope.io.checkpoint import builtin_models
from diffuscope.metrics.evaluation import Evaluator
from diffuscope.models.load import load_model

pytestmark = pytest.mark.skipif("mnist" not in builtin_models(), reason="the shipped mnist model is not installed")


def test_quality_bar_evaluator_and_sweep_use_the_same_real_images():
    from diffuscope.metrics import split_real
    from diffuscope.sweep import SweepConfig, model_inputs

    model = load_model("mnist")
    ev = Evaluator.for_model(model)
    assert ev.classifier is not None and ev.data == "mnist"
    n = 40
    labels = torch.arange(10).repeat(n // 10)
    sets = ev.real_sets(labels)
    test, train = ev.datasets()
    split = split_real(test, n, seed=0, train=train())
    assert torch.equal(sets.reference, split.reference.images)
    assert torch.equal(sets.stand_in, split.stand_in.images)
    inputs, groups = model_inputs(model, SweepConfig(prompts=("all",), n=n, steps=(5,), samplers=("Euler",)))
    assert "convergence" in groups and len(groups) > 1  # a classifier: distribution metrics too
    assert torch.equal(inputs.reference_images, sets.reference)
    assert torch.equal(inputs.floor_images, sets.stand_in)
    images = inputs.reference_images[:8]
    assert torch.equal(inputs.features(images), ev.features(images))


def test_only_the_prompted_classes_count():
    model = load_model("mnist")
    ev = Evaluator.for_model(model)
    sets = ev.real_sets(torch.tensor([7, 7, 3, 7]))
    assert sorted(sets.stand_in_labels.tolist()) == [3, 7, 7, 7] and len(sets.reference) == 4
    assert sorted(ev.classify(sets.reference).tolist()).count(7) >= 2  # the reference holds 7s and a 3


def test_a_model_without_a_classifier_has_an_evaluator_that_says_so(tmp_path):
    from diffuscope.core.conditioning import NoConditioner
    from diffuscope.core.model import DiffusionModel

    model = DiffusionModel(lambda x, s, c: x, NoConditioner(), (1, 8, 8), path=tmp_path)
    ev = Evaluator.for_model(model)
    assert ev.classifier is None and "no classifier" in ev.missing and ev.describe() is None

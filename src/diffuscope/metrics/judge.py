"""What an ``Evaluator`` judges generated images with (docs/architecture.md, "One evaluation path"): a ``Judge``
gives features (FD/KID/precision-recall, feature convergence) and, where it can, a prediction per image (accuracy
vs prompt); ``measures`` says which kind of judgement it is, as a type rather than a string.

    CLASSES     a classifier trained on the model's classes (metrics.classifier.Classifier): accuracy = its
                prediction is the prompted class
    RETRIEVAL   one real image per prompt (metrics.retrieval.RetrievalJudge, emoji): accuracy = retrieval top-1,
                the reference is the prompted real images themselves
    FEATURES    features only, of real images the user supplies (metrics.feature_judge.FeatureJudge, `--real`): no
                prediction, prompt faithfulness not measured
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Protocol, runtime_checkable

from torch import Tensor


class Judgement(Enum):
    CLASSES = "classes"
    RETRIEVAL = "retrieval"
    FEATURES = "features"

    @property
    def predicts(self) -> bool:
        """Whether the judge predicts a class per image (accuracy vs prompt can be measured)."""
        return self is not Judgement.FEATURES


@runtime_checkable
class Judge(Protocol):
    """Images are pixels [N, C, H, W] in [-1, 1] at the model's size. ``predict`` gives class (gallery) indices
    [N]; a judge whose ``measures.predicts`` is False refuses it."""

    measures: Judgement

    @property
    def class_names(self) -> tuple[str, ...]: ...

    def features(self, images: Tensor) -> Tensor: ...

    def predict(self, images: Tensor) -> Tensor: ...

    def check_images(self, images: Tensor) -> None: ...

    def describe(self) -> dict[str, Any]: ...

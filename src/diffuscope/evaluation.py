"""One evaluation path: for a model, the real image set, the feature extractor / classifier and the real-vs-real
floor. The quality bar (tests, bench/) and the sweep all ask an ``Evaluator`` for these, so they choose real images
by the same rule (``metrics.floor.real_sets``) and see the same features.

    ev = model.evaluator()                     # or Evaluator.for_model(model)
    sets = ev.real_sets(labels)                # reference + real stand-in for the floor, by the one rule
    report = ev.quality(images, labels)        # metrics.QualityReport of generated images vs the reference
    floor = ev.floor(labels)                   # the same reference, real images playing the generated set

A model without a classifier (or without its data set) has an evaluator with ``classifier = None``: convergence
metrics only, and the reason is kept in ``missing``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffuscope.errors import UsageError


@dataclass
class Evaluator:
    classifier: Any  # metrics.classifier.Classifier, or None
    classifier_path: Path | None
    data: str | None  # the data set name the real images come from
    image_size: int
    channels: int
    class_names: tuple[str, ...]
    missing: str = ""  # why there is no classifier, if there is none
    seed: int = 0  # the seed of the real-image choice

    @classmethod
    def for_model(cls, model, *, device="cpu", require: bool = False) -> Evaluator:
        """The evaluator of a ``DiffusionModel``: the classifier found beside its checkpoint (or its run's), on its
        own data set (run config, else the classifier's). ``require``: no classifier is a UsageError."""
        from diffuscope.metrics import find_classifier, load_classifier, require_classifier

        c, h, w = model.image_shape
        names = tuple(model.class_names)
        found = find_classifier(model.path) if model.path is not None else None
        if found is None:
            if require:
                require_classifier(model.path)
            return cls(None, None, model.data_name, h, c, names, "no classifier found for this model")
        classifier = load_classifier(found, device=device)
        if names:
            classifier.check_classes(names)
        classifier.check_images(torch.zeros(1, c, h, w))
        data = model.data_name or classifier.info.data
        return cls(classifier, Path(classifier.info.path or found), data, h, c, names)

    def features(self, images: Tensor) -> Tensor:
        """Classifier features of pixel images, clamped to [-1, 1] (what a saved PNG holds)."""
        return self.classifier.features(images.clamp(-1, 1))

    def classify(self, images: Tensor) -> Tensor:
        return self.classifier.predict(images.clamp(-1, 1))

    def datasets(self):
        """(test split, a loader of the train split) of the model's data at its size and channels."""
        from diffuscope.data import load_dataset

        if self.data is None:
            raise UsageError("this model names no data set: no real images to compare with")
        opts = {"image_size": self.image_size, "channels": self.channels}
        return load_dataset(self.data, split="test", **opts), (lambda: load_dataset(self.data, split="train",
                                                                                   **opts))

    def real_sets(self, labels: Tensor):
        """The reference set and the real stand-in for ``labels`` (metrics.floor.real_sets, the one rule)."""
        from diffuscope.metrics.floor import real_sets

        test, train = self.datasets()
        return real_sets(test, torch.as_tensor(labels, dtype=torch.long), seed=self.seed, train=train,
                         class_names=self.class_names)

    def quality(self, images: Tensor, labels: Tensor, **options):
        """metrics.QualityReport of generated pixel images (prompted with ``labels``) vs the reference set."""
        from diffuscope.metrics import compute_metrics

        sets = self.real_sets(labels)
        return compute_metrics(images, labels, self.classifier, sets.reference, comparison="generated vs held-out",
                               **{"seed": self.seed, **options})

    def floor(self, labels: Tensor, **options):
        """The real-vs-real floor at the same N and reference as ``quality(images, labels)``."""
        from diffuscope.metrics import compute_metrics

        sets = self.real_sets(labels)
        return compute_metrics(sets.stand_in, sets.stand_in_labels, self.classifier, sets.reference, clamp=False,
                               comparison=sets.comparison, **{"seed": self.seed, **options})

    def describe(self) -> dict[str, Any] | None:
        if self.classifier is None:
            return None
        return {"path": str(self.classifier_path), "data": self.classifier.info.data,
                "held_out_accuracy": self.classifier.info.accuracy}

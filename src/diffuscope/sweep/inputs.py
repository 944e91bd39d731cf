"""What a sweep measures against, gathered from a model: its denoiser and schedule, the prompts as conditions, its
decoder, and from its evaluator (evaluation.py: the one evaluation path) the features, predicted classes and the real
images of the prompted classes (reference and real-vs-real stand-in, chosen by ``metrics.floor.real_sets``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from diffuscope.checks.errors import UsageError
from diffuscope.core.conditioning import ClassConditioner, NoConditioner
from diffuscope.core.model import DiffusionModel
from diffuscope.metrics.evaluation import Evaluator
from diffuscope.sweep.config import CLASSIFIER_GROUPS, SweepConfig, resolve_metrics


@dataclass
class SweepInputs:
    """Everything ``sweep`` needs besides its config: a model's (``model_inputs``), or a bare denoiser's given by
    hand (then only denoiser, schedule and shape are required)."""

    denoiser: Callable  # D(x, sigma, cond) -> x0_hat
    schedule: Any  # schedules.Schedule (its grids; is_discrete / num_timesteps)
    shape: tuple[int, int, int]  # (C, H, W)
    labels: Tensor | None = None  # int64 [n], the class each image is prompted with (None: unconditional)
    null_label: int | None = None  # a bare denoiser's null class index (= its number of classes; None: no classes)
    class_names: tuple[str, ...] = ()
    features: Callable[[Tensor], Tensor] | None = None  # images [N, C, H, W] -> features [N, D]
    classify: Callable[[Tensor], Tensor] | None = None  # images -> predicted class [N]
    reference_images: Tensor | None = None  # real images the generated ones are compared with
    floor_images: Tensor | None = None  # other real images (same N as generated), playing the generated set
    floor_labels: Tensor | None = None  # their true classes (the floor's accuracy)
    floor_comparison: str = "real vs real"
    info: dict[str, Any] = field(default_factory=dict)  # model path, step, data, classifier: for the report
    num_classes: int | None = None  # classes of the classifier's accuracy (None: len(class_names))
    model: DiffusionModel | None = None  # the loaded model (None: a bare denoiser)
    prompts: tuple[str, ...] | None = None  # the prompt of each image (None: unconditional, the null condition)

    def generation_model(self) -> DiffusionModel:
        """The model generation goes through (its conditioner, guidance and decoder): the loaded one, or the bare
        denoiser as an unconditional model, or a class model whose null class is ``null_label``."""
        if self.model is not None:
            return self.model
        k = self.null_label if self.null_label is not None else (
            None if self.labels is None else int(self.labels.max()) + 1)
        conditioner = NoConditioner() if k is None else ClassConditioner(
            self.class_names[:k] if len(self.class_names) >= k else tuple(str(c) for c in range(k)))
        return DiffusionModel.bare(self.denoiser, self.schedule, self.shape, conditioner)

    def image_prompts(self) -> tuple[str, ...] | None:
        """The prompt of each image: ``prompts``, or a bare denoiser's labels as its class names."""
        if self.prompts is not None or self.labels is None or self.model is not None:
            return self.prompts
        names = self.generation_model().class_names
        return tuple(names[int(c)] for c in self.labels)


def prompt_labels(prompts: tuple[str, ...], class_names: tuple[str, ...], n: int) -> tuple[Tensor, list[str]]:
    """Labels [n] spread round-robin over the prompts ("all" = every class), and the prompts as class names. Class
    names hold no commas, so a prompt "3,7" is two prompts (text models keep their commas: "family: man, woman")."""
    from diffuscope.data import class_index

    prompts = tuple(part.strip() for p in prompts for part in str(p).split(",") if part.strip())

    if not prompts:
        raise UsageError("give at least one prompt (a class name, or 'all')")
    if any(p.strip().lower() == "all" for p in prompts):
        if len(prompts) > 1:
            raise UsageError("prompt 'all' already means every class: give it alone")
        classes = list(range(len(class_names)))
    else:
        classes = [class_index(p, class_names) for p in prompts]
        if len(set(classes)) != len(classes):
            raise UsageError(f"a class is prompted twice in {list(prompts)}")
    labels = torch.tensor([classes[i % len(classes)] for i in range(n)], dtype=torch.long)
    return labels, [class_names[c] for c in classes]


def _name(class_names: tuple[str, ...], c: int) -> str:
    return class_names[c] if c < len(class_names) else str(c)


NO_FAITHFULNESS = ("prompt faithfulness (accuracy): no classifier or judge for this model's prompts, so whether the "
                   "images show what was asked is not measured")


def _features_only(inputs: SweepInputs, evaluator, config: SweepConfig, info: dict) -> tuple[SweepInputs, tuple]:
    """A model judged in ImageNet features against --real images: KID (and, on request, FD and precision/recall)
    and convergence in pixels and features; accuracy cannot be measured."""
    groups = ("kid", "convergence") if config.metrics is None else tuple(config.metrics)
    if "accuracy" in groups:
        raise UsageError("metric accuracy needs a classifier: with --real this model is measured in features "
                         "only (valid: fd, kid, pr, convergence)")
    sets = evaluator.real_sets(torch.zeros(config.n, dtype=torch.long))
    inputs.features = evaluator.features
    inputs.reference_images, inputs.floor_images = sets.reference, sets.stand_in
    inputs.floor_labels, inputs.floor_comparison = sets.stand_in_labels, sets.comparison
    info["classifier"], info["data"] = evaluator.describe(), evaluator.data
    info["not_measured"] = [NO_FAITHFULNESS]
    return inputs, groups


def _no_evaluator(inputs: SweepInputs, model, info: dict) -> None:
    """A model without a classifier and without --real: convergence in pixels, and in ImageNet features for colour
    images where the EfficientNet-Lite0 wheel is installed; the report names what was not measured."""
    if model.image_shape[0] == 3:
        try:
            from diffuscope.metrics.efficientnet import EfficientNetFeatures

            inputs.features = EfficientNetFeatures.load()
            info["features"] = "EfficientNet-Lite0 ImageNet features (convergence only)"
        except UsageError:
            pass
    if model.run_config.get("pipeline"):  # a diffusers pipeline: no data set of its own
        info["not_measured"] = [
            "FD, KID, precision/recall: no real images to compare with; give --real DATA (a folder of images "
            "like the ones you want, or a built-in data set) to measure KID in ImageNet features",
            NO_FAITHFULNESS]


def generation_inputs(model, config: SweepConfig, *, device: str | torch.device = "cpu",
                      labels: Tensor | None = None) -> SweepInputs:
    """What generating a model's cells takes, and nothing of its evaluator: the loaded model, its denoiser, schedule
    and shape, the prompt and class of every image (``config.prompts`` round-robin, or ``labels``) and the report's
    model info. The models swept beside the first one (sweep_models) need no more: the first one's evaluator
    measures them all."""
    from diffuscope.models.load import load_model

    loaded: DiffusionModel = model if isinstance(model, DiffusionModel) else load_model(model, device=device)
    conditioner = loaded.conditioner
    names = tuple(loaded.class_names)
    image_prompts, prompts = None, []
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long)
        prompts = [_name(names, int(c)) for c in labels.unique()]
        if conditioner.has_classes:
            image_prompts = tuple(names[int(c)] for c in conditioner.labels(labels).labels)
    elif conditioner.has_classes:
        labels, prompts = prompt_labels(config.prompts, names, config.n)
        image_prompts = tuple(names[int(c)] for c in labels)
    elif conditioner.has_text:
        if not config.prompts:
            raise UsageError(f"give at least one prompt ({conditioner.describe()})")
        prompts = [conditioner.check(p) for p in config.prompts]
        image_prompts = tuple(prompts[i % len(prompts)] for i in range(config.n))
    elif config.prompts:
        conditioner.check(config.prompts[0])  # an unconditional model refuses a prompt
    info: dict[str, Any] = {"model_path": str(loaded.path or ""), "model_step": loaded.step,
                            "model_name": loaded.name, "prompts": prompts}
    return SweepInputs(loaded.denoiser, loaded.schedule, tuple(loaded.sample_shape), labels, None, names,
                       info=info, model=loaded, prompts=image_prompts)


def model_inputs(model, config: SweepConfig, *, device: str | torch.device = "cpu",
                 labels: Tensor | None = None) -> tuple[SweepInputs, tuple[str, ...]]:
    """SweepInputs for a checkpoint/run folder, built-in model name or DiffusionModel, and the metric groups to
    measure. Prompts become conditions through the model's conditioner; samples are decoded by the model; real
    images, features and classes come from its evaluator (evaluation.py). A classifier metric asked for without a
    classifier -> UsageError saying how to train one."""
    inputs = generation_inputs(model, config, device=device, labels=labels)
    loaded, info, labels = inputs.model, inputs.info, inputs.labels
    conditioner, prompts = loaded.conditioner, info["prompts"]
    evaluator = Evaluator.for_model(loaded, device=device, real=config.real)
    if evaluator.is_features_only:
        return _features_only(inputs, evaluator, config, info)
    if evaluator.classifier is None:
        _no_evaluator(inputs, loaded, info)
    if conditioner.has_text and labels is None and evaluator.is_retrieval:
        # judged by retrieval: each prompt's real image is its class (None: a prompt without one)
        per_prompt = evaluator.labels_for(prompts)
        if per_prompt is None:
            info["classifier"] = None
            info["no_judge"] = "a prompt has no real image to be judged against: only convergence was measured"
            return inputs, resolve_metrics(config, False)
        labels = per_prompt[torch.arange(config.n) % len(per_prompt)]
        inputs.labels, inputs.class_names = labels, evaluator.class_names
    groups = resolve_metrics(config, evaluator.classifier is not None)
    if evaluator.is_retrieval and config.metrics is None:
        # retrieval top-1 is the measure that separates faithful images (docs/benchmarks.md, "The shipped emoji
        # model"); FD/KID/precision-recall (ImageNet features, slow bootstraps) stay available through --metrics
        groups = ("accuracy", "convergence")
    if not any(g in CLASSIFIER_GROUPS for g in groups):
        if evaluator.classifier is None:
            info["classifier"] = None
        return inputs, groups
    if evaluator.classifier is None or labels is None:
        from diffuscope.metrics import require_classifier

        require_classifier(loaded.path)
        raise UsageError("classifier metrics need class prompts; use --metrics convergence for this model")
    inputs.features, inputs.classify = evaluator.features, evaluator.classify
    info["classifier"] = evaluator.describe()
    sets = evaluator.real_sets(labels)
    inputs.reference_images, inputs.floor_images = sets.reference, sets.stand_in
    inputs.floor_labels, inputs.floor_comparison = sets.stand_in_labels, sets.comparison
    info["data"] = evaluator.data
    return inputs, groups

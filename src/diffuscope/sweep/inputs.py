"""What a sweep measures against, gathered from a trained model: its denoiser and schedule, the prompts as labels,
its classifier (features and predictions) and the real images of the prompted classes.

Real images come from the model's own data set (``run_config["data"]``). Only the prompted classes count, in the
prompts' proportions (FD of generated 7s against all digits would measure the prompt, not the sampler):

    reference  held-out (test-split) images of the prompted classes: per class min(prompted count, held-out count)
    stand-in   n other real images with exactly the prompted labels, playing the generated set for the
               real-vs-real floor: more held-out images when enough remain ("held-out vs held-out"), else train
               images ("train vs held-out"; the classifier has seen them, so the floor's accuracy is then
               optimistic). Generated sets and the floor use the same reference, so both are at the same N.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffuscope.errors import UsageError
from diffuscope.sweep.config import CLASSIFIER_GROUPS, SweepConfig, resolve_metrics


@dataclass
class SweepInputs:
    """Everything ``sweep`` needs besides its config. Only denoiser, schedule and shape are required."""

    denoiser: Callable  # D(x, sigma, cond) -> x0_hat
    schedule: Any  # schedules.Schedule (its grids; is_discrete / num_timesteps)
    shape: tuple[int, int, int]  # (C, H, W)
    labels: Tensor | None = None  # int64 [n], the class each image is prompted with (None: unconditional)
    null_label: int | None = None  # the empty prompt's class (needed for guidance != 1)
    class_names: tuple[str, ...] = ()
    features: Callable[[Tensor], Tensor] | None = None  # images [N, C, H, W] -> features [N, D]
    classify: Callable[[Tensor], Tensor] | None = None  # images -> predicted class [N]
    reference_images: Tensor | None = None  # real images the generated ones are compared with
    floor_images: Tensor | None = None  # other real images (same N as generated), playing the generated set
    floor_labels: Tensor | None = None  # their true classes (the floor's accuracy)
    floor_comparison: str = "real vs real"
    info: dict[str, Any] = field(default_factory=dict)  # model path, step, data, classifier: for the report


def prompt_labels(prompts: tuple[str, ...], class_names: tuple[str, ...], n: int) -> tuple[Tensor, list[str]]:
    """Labels [n] spread round-robin over the prompts ("all" = every class), and the prompts as class names."""
    from diffuscope.data import class_index

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


@dataclass(frozen=True)
class RealSets:
    reference: Tensor
    stand_in: Tensor
    stand_in_labels: Tensor
    comparison: str


def _shuffled_by_class(labels: Tensor, seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = labels.cpu().numpy()
    return {int(c): rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)}


def real_sets(test, labels: Tensor, *, seed: int = 0, train: Callable[[], Any] | None = None,
              class_names: tuple[str, ...] = ()) -> RealSets:
    """The reference and stand-in sets for ``labels`` (see the module notes); deterministic in (data, labels,
    seed). ``test``/``train()`` are data.ImageDataset; train is loaded only when held-out images run short."""
    want = {int(c): int(k) for c, k in zip(*np.unique(labels.cpu().numpy(), return_counts=True))}
    held = _shuffled_by_class(test.labels, seed)
    ref_idx, rest = [], {}
    for c, k in want.items():
        pool = held.get(c, np.empty(0, dtype=np.int64))
        if len(pool) == 0:
            raise UsageError(f"the held-out split of {test.name!r} has no images of class "
                             f"{_name(class_names, c)!r}: no reference for it")
        ref_idx.append(pool[:k])
        rest[c] = pool[min(k, len(pool)):]
    reference = test.images[torch.from_numpy(np.concatenate(ref_idx))]
    if all(len(rest[c]) >= k for c, k in want.items()):
        idx = np.concatenate([rest[c][:k] for c, k in want.items()])
        return RealSets(reference, test.images[torch.from_numpy(idx)], test.labels[torch.from_numpy(idx)],
                        "held-out vs held-out")
    pool_train = train() if train is not None else None
    tr = _shuffled_by_class(pool_train.labels, seed + 1) if pool_train is not None else {}
    short = [c for c, k in want.items() if len(tr.get(c, ())) < k]
    if short:
        c = short[0]
        most = max(len(held.get(c, ())) // 2, len(tr.get(c, ())))
        raise UsageError(f"n is too large for a real-vs-real floor at the same N: class {_name(class_names, c)!r} "
                         f"is prompted {want[c]} times but {test.name!r} holds {len(held.get(c, ()))} held-out and "
                         f"{len(tr.get(c, ()))} train images of it (at most {most} per prompted class); "
                         f"lower --n or use --metrics convergence")
    idx = np.concatenate([tr[c][:k] for c, k in want.items()])
    t = torch.from_numpy(idx)
    return RealSets(reference, pool_train.images[t], pool_train.labels[t], "train vs held-out")


def _name(class_names: tuple[str, ...], c: int) -> str:
    return class_names[c] if c < len(class_names) else str(c)


def model_inputs(model, config: SweepConfig, *, device: str | torch.device = "cpu",
                 labels: Tensor | None = None) -> tuple[SweepInputs, tuple[str, ...]]:
    """SweepInputs for a checkpoint/run folder, built-in model name or checkpoint.LoadedModel, and the metric
    groups to measure. A classifier metric asked for without a classifier -> UsageError saying how to train one."""
    from diffuscope.checkpoint import LoadedModel, load_model

    loaded: LoadedModel = model if isinstance(model, LoadedModel) else load_model(model, device=device)
    u = loaded.config.unet
    shape = (u.in_channels, u.image_size, u.image_size)
    names = tuple(loaded.class_names)
    prompts: list[str] = []
    if labels is None:
        labels, prompts = prompt_labels(config.prompts, names, config.n)
    else:
        labels = torch.as_tensor(labels, dtype=torch.long)
        prompts = [_name(names, int(c)) for c in labels.unique()]
    path = Path(loaded.path)
    name = path.parent.parent.name if path.parent.name == "checkpoints" else path.name
    info: dict[str, Any] = {"model_path": str(path), "model_step": loaded.step,
                            "model_name": loaded.run_config.get("model_name") or name, "prompts": prompts}
    inputs = SweepInputs(loaded.denoiser, loaded.denoiser.schedule, shape, labels, u.num_classes, names, info=info)
    from diffuscope.metrics import find_classifier, load_classifier, require_classifier

    found = find_classifier(loaded.path)
    groups = resolve_metrics(config, found is not None)
    if not any(g in CLASSIFIER_GROUPS for g in groups):
        if found is None:
            info["classifier"] = None
        return inputs, groups
    classifier = load_classifier(require_classifier(loaded.path), device=device)
    classifier.check_classes(names)
    classifier.check_images(torch.zeros(1, *shape))
    # what a saved PNG holds: samplers may overshoot [-1, 1] slightly (as metrics.compute_metrics)
    inputs.features = lambda x: classifier.features(x.clamp(-1, 1))
    inputs.classify = lambda x: classifier.predict(x.clamp(-1, 1))
    info["classifier"] = {"path": str(classifier.info.path or found), "data": classifier.info.data,
                          "held_out_accuracy": classifier.info.accuracy}

    from diffuscope.data import load_dataset

    data = (loaded.run_config.get("data") or {}).get("name") or classifier.info.data
    opts = {"image_size": u.image_size, "channels": u.in_channels}
    test = load_dataset(data, split="test", **opts)
    sets = real_sets(test, labels, seed=0, train=lambda: load_dataset(data, split="train", **opts),
                     class_names=names)
    inputs.reference_images, inputs.floor_images = sets.reference, sets.stand_in
    inputs.floor_labels, inputs.floor_comparison = sets.stand_in_labels, sets.comparison
    info["data"] = data
    return inputs, groups

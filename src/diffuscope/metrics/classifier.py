"""The feature network behind diffuscope's quality metrics: a small CNN classifier, saved and loaded strictly.

No Inception or CLIP weights can be downloaded here, so FD/KID/precision/recall are measured in the penultimate
layer of a classifier trained on the model's own data set (a "Frechet classifier distance"; ANCHORS.md: offline).

Files (a classifier folder, by convention ``RUN_DIR/classifier/``):

    classifier.safetensors  the weights
    classifier.json         written last: format, architecture config, data name, class names, image size,
                            channels, held-out accuracy (overall and per class), training settings and time,
                            and the size + sha256 of the weights file (a mismatch is refused as corrupt)

The features are the penultimate (feature_dim) layer, centred and scaled by statistics of the train split that
are stored with the weights (``ClassifierNet.normalize``), so FD/KID values are in units of feature variance.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffuscope.checks.errors import UsageError, quote
from diffuscope.io import config as config_io
from diffuscope.io.checkpoint import load_weights
from diffuscope.metrics.judge import Judgement

WEIGHTS_FILE = "classifier.safetensors"
INFO_FILE = "classifier.json"
FORMAT = "diffuscope-classifier"
FORMAT_VERSION = 1
MIN_SIZE, MAX_SIZE = 8, 64


@dataclass(frozen=True)
class ClassifierConfig:
    channels: int = 1  # 1 (grayscale) or 3 (RGB)
    image_size: int = 28  # square input side, 8..64
    num_classes: int = 10
    widths: tuple[int, ...] = (32, 64, 128)  # conv stages; 2x2 max-pool between stages while the side is >= 8
    convs_per_stage: int = 1  # conv3x3-BN-ReLU blocks per stage
    pool: int = 2  # adaptive average pool to pool x pool before the feature layer
    feature_dim: int = 128  # the penultimate layer: the features every distribution metric uses
    dropout: float = 0.2  # before the output layer (training only)


def check_config(cfg: ClassifierConfig) -> None:
    if cfg.channels not in (1, 3):
        raise UsageError(f"classifier channels must be 1 or 3, got {cfg.channels}")
    if not MIN_SIZE <= cfg.image_size <= MAX_SIZE:
        raise UsageError(f"classifier image size must be {MIN_SIZE}..{MAX_SIZE} pixels, got {cfg.image_size} "
                         f"(pass --image-size to resize the data)")
    if cfg.num_classes < 2:
        raise UsageError(f"a classifier needs at least 2 classes, got {cfg.num_classes}")
    sizes = (*cfg.widths, cfg.convs_per_stage, cfg.pool, cfg.feature_dim)
    if not cfg.widths or min(sizes) < 1 or not 0 <= cfg.dropout < 1:
        raise UsageError(f"bad classifier config {cfg}")


class ClassifierNet(nn.Module):
    """conv3x3-BN-ReLU blocks per stage, max-pool between stages, adaptive pool, linear feature layer, linear head."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        check_config(cfg)
        layers: list[nn.Module] = []
        c, side = cfg.channels, cfg.image_size
        for i, w in enumerate(cfg.widths):
            if i > 0 and side >= 8:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            for j in range(cfg.convs_per_stage):
                c_in = c if j == 0 else w
                layers += [nn.Conv2d(c_in, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        layers.append(nn.AdaptiveAvgPool2d(cfg.pool))
        self.body = nn.Sequential(*layers)
        self.embed = nn.Linear(c * cfg.pool * cfg.pool, cfg.feature_dim)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.feature_dim, cfg.num_classes))
        # set after training from the train split (see features); saved with the weights
        self.register_buffer("feature_mean", torch.zeros(cfg.feature_dim))
        self.register_buffer("feature_scale", torch.ones(1))

    def raw_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.body(x).flatten(1))

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """Centred on the train split's mean feature and divided by its RMS standard deviation (one scalar, so
        distances keep their geometry): x.y/D is then O(1), where KID's cubic kernel (x.y/D + 1)^3 behaves as
        it does on Inception features; unscaled, it reached ~300 and KID's noise swamped it."""
        return (raw - self.feature_mean) / self.feature_scale

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.raw_features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.raw_features(x))


@dataclass(frozen=True)
class ClassifierInfo:
    """What classifier.json records (``path`` is the folder it was loaded from or saved to)."""

    config: ClassifierConfig
    data: str
    class_names: tuple[str, ...]
    accuracy: float  # on the held-out (test) split
    per_class_accuracy: tuple[float, ...]  # one per class, NaN for a class absent from the test split
    n_train: int
    n_test: int
    train: dict[str, Any] = field(default_factory=dict)  # epochs, seed, batch size, lr, train_time_s, ...
    path: Path | None = None

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def train_time_s(self) -> float:
        return float(self.train.get("train_time_s", float("nan")))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": FORMAT_VERSION, "config": config_io.to_dict(self.config),
            "data": self.data, "class_names": list(self.class_names), "image_size": self.image_size,
            "channels": self.channels, "accuracy": self.accuracy,
            "per_class_accuracy": {n: (None if a != a else a) for n, a in zip(self.class_names,
                                                                             self.per_class_accuracy)},
            "n_train": self.n_train, "n_test": self.n_test, "train": self.train,
            "features": "penultimate layer, minus the train split's mean feature, divided by its RMS std",
        }


class Classifier:
    """A trained classifier in eval mode, a ``metrics.judge.Judge`` of classes. Images: float [N, C, S, S] in
    [-1, 1] with the trained C and S."""

    measures = Judgement.CLASSES

    def __init__(self, net: ClassifierNet, info: ClassifierInfo, device: str | torch.device = "cpu"):
        self.net = net.eval().requires_grad_(False).to(device)
        self.info = info
        self.device = torch.device(device)

    def check_images(self, images: torch.Tensor) -> None:
        cfg = self.info.config
        want = (cfg.channels, cfg.image_size, cfg.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != want:
            raise UsageError(f"the classifier takes images [N, {want[0]}, {want[1]}, {want[2]}] "
                             f"(trained on {quote(self.info.data)}), got {list(images.shape)}: train a classifier at "
                             f"this size/channels (diffuscope classifier --image-size)")

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.info.class_names)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.info.path), "data": self.info.data, "held_out_accuracy": self.info.accuracy}

    def check_classes(self, class_names: tuple[str, ...] | list[str]) -> None:
        """Refuse a model whose prompts (class names) differ from the classifier's classes."""
        if tuple(class_names) != self.info.class_names:
            raise UsageError(f"the classifier's classes {list(self.info.class_names)[:5]}... differ from the "
                             f"model's {list(class_names)[:5]}...: train a classifier on the model's data set")

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
        """(features [N, D], logits [N, K]), float32 on the CPU, computed in batches. Features are the
        penultimate layer, normalised (ClassifierNet.normalize)."""
        self.check_images(images)
        feats, logits = [], []
        for chunk in images.split(batch_size):
            raw = self.net.raw_features(chunk.to(self.device, torch.float32))
            feats.append(self.net.normalize(raw).cpu())
            logits.append(self.net.head(raw).cpu())
        d, k = self.info.config.feature_dim, self.info.num_classes
        if not feats:
            return torch.empty(0, d), torch.empty(0, k)
        return torch.cat(feats), torch.cat(logits)

    def features(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        return self.embed(images, batch_size)[0]

    def logits(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        return self.embed(images, batch_size)[1]

    def predict(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        return self.logits(images, batch_size).argmax(1)

    def __repr__(self) -> str:
        i = self.info
        return (f"Classifier(data={i.data!r}, {i.channels}x{i.image_size}x{i.image_size}, "
                f"classes={i.num_classes}, held-out accuracy={i.accuracy:.4f})")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_classifier(net: ClassifierNet, info: ClassifierInfo, out_dir: str | Path) -> Path:
    """Weights (temp file + os.replace), then classifier.json last, atomically. Returns the folder."""
    import os
    import tempfile

    from safetensors.torch import save_file

    from diffuscope.io.checkpoint import TMP_PREFIX, write_json_atomic
    from diffuscope.io.outputs import writing

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=TMP_PREFIX, suffix=".safetensors")
    os.close(fd)
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        with writing(out / WEIGHTS_FILE):  # a full disk: one line naming the file (exit 1)
            save_file(state, tmp, metadata={"format": FORMAT})
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, out / WEIGHTS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    weights = out / WEIGHTS_FILE
    record = info.to_json() | {"weights": {"file": WEIGHTS_FILE, "bytes": weights.stat().st_size,
                                           "sha256": _sha256(weights)}}
    write_json_atomic(out / INFO_FILE, record)
    return out


def _read_info(folder: Path) -> tuple[ClassifierInfo, dict[str, Any]]:
    try:
        raw = json.loads((folder / INFO_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{folder / INFO_FILE} is unreadable: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise UsageError(f"{folder / INFO_FILE} is not a diffuscope classifier file")
    if raw.get("version") != FORMAT_VERSION:
        raise UsageError(f"{folder / INFO_FILE} has format version {quote(raw.get('version'))}; "
                         f"this diffuscope reads version {FORMAT_VERSION}")
    try:
        cfg = config_io.from_dict(ClassifierConfig, raw["config"], "classifier.config")
        names = tuple(str(n) for n in raw["class_names"])
        per_class = raw["per_class_accuracy"]
        info = ClassifierInfo(
            config=cfg, data=str(raw["data"]), class_names=names, accuracy=float(raw["accuracy"]),
            per_class_accuracy=tuple(float("nan") if per_class.get(n) is None else float(per_class[n])
                                     for n in names),
            n_train=int(raw["n_train"]), n_test=int(raw["n_test"]), train=dict(raw.get("train", {})), path=folder)
        weights = raw["weights"]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UsageError(f"{folder / INFO_FILE} is missing or has a bad field: {e}") from None
    if len(names) != cfg.num_classes:
        raise UsageError(f"{folder / INFO_FILE}: {len(names)} class names for {cfg.num_classes} classes")
    return info, weights


def load_classifier(path: str | Path, *, device: str | torch.device = "cpu") -> Classifier:
    """Load a classifier folder (classifier.json + classifier.safetensors); refuse anything mismatched or corrupt."""
    folder = Path(path)
    if folder.is_file() and folder.name in (INFO_FILE, WEIGHTS_FILE):
        folder = folder.parent
    if not (folder / INFO_FILE).is_file():
        raise UsageError(f"no classifier in {folder} (expected {INFO_FILE} and {WEIGHTS_FILE}): train one with "
                         f"`diffuscope classifier --data DATA --out {folder}`")
    info, weights = _read_info(folder)
    file = folder / WEIGHTS_FILE
    if not file.is_file():
        raise UsageError(f"classifier weights {file} are missing")
    size = file.stat().st_size
    if size != weights.get("bytes") or _sha256(file) != weights.get("sha256"):
        raise UsageError(f"classifier weights {file} do not match {INFO_FILE} (corrupt, truncated or replaced): "
                         f"retrain with `diffuscope classifier --data {info.data} --out {folder}`")
    net = ClassifierNet(info.config)
    load_weights(net, file)
    return Classifier(net, info, device)

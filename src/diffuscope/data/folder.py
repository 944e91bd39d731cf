"""A folder of PNG/JPEG images as a data set.

Layout: sub-folders are classes (class names = sub-folder names, sorted; images at any depth below each);
a folder holding only images is one class named after the folder. Names starting with "." or "__" are ignored.
If the folder holds exactly ``train`` and ``test`` sub-folders, those are the split (each laid out as above);
otherwise 10% of each class (rounded half up, a fixed pseudo-random choice, see ``split``) is held out as
"test", and "train" is the rest.

Images are converted to grayscale ("L") or RGB: ``channels`` defaults to 1 when every image (of every split) is
grayscale, else 3. Transparent pixels are composited onto white. Each image is scaled so its shorter side is
``image_size`` (LANCZOS when shrinking, BICUBIC when enlarging) and centre-cropped to a square (default 32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from diffuscope.checks import limits
from diffuscope.checks.errors import UsageError, one_line
from diffuscope.data.dataset import ImageDataset, from_uint8
from diffuscope.data.split import held_out_mask, select, tenth

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
DEFAULT_FOLDER_SIZE = 32
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_ACCEPTED = ", ".join(IMAGE_EXTENSIONS)


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def _scan(folder: Path, flat_name: str) -> dict[str, list[Path]]:
    """Class name -> sorted image files, for a folder laid out as classes or flat (one class, `flat_name`)."""
    flat = sorted(p for p in folder.iterdir() if _is_image(p))
    subdirs = _visible_dirs(folder)
    if flat and subdirs:
        raise UsageError(f"{folder} mixes images with sub-folders: put every image in a class sub-folder, "
                         "or use no sub-folders")
    if flat:
        return {flat_name: flat}
    classes = {}
    for d in subdirs:
        files = sorted(p for p in d.rglob("*") if _is_image(p) and not any(
            part.startswith((".", "__")) for part in p.relative_to(d).parts))
        if not files:
            raise UsageError(f"class folder {d} has no images (accepted: {_ACCEPTED})")
        classes[d.name] = files
    if not classes:
        raise UsageError(f"{folder} has no images (accepted: {_ACCEPTED}, directly or in class sub-folders)")
    return classes


def _open(path: Path) -> Image.Image:
    return limits.open_image(path)  # bounded pixels, file size and text chunks; decoder errors are one line


def _convert(img: Image.Image, mode: str) -> Image.Image:
    """To "L" or "RGB", compositing any transparency onto white."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert(mode)


def _fit(img: Image.Image, size: int) -> np.ndarray:
    resample = Image.Resampling.LANCZOS if min(img.size) > size else Image.Resampling.BICUBIC
    return np.asarray(ImageOps.fit(img, (size, size), method=resample, centering=(0.5, 0.5)))


def _load(files: list[Path], size: int, channels: int) -> np.ndarray:
    """uint8 [N, H, W] (grayscale) or [N, 3, H, W] (RGB)."""
    mode = "L" if channels == 1 else "RGB"
    limits.check_memory(f"{len(files):,} images of {size}x{size}x{channels}",
                        limits.images_bytes(len(files), (channels, size, size), copies=2, itemsize=4))
    pixels = np.stack([_fit(_convert(_open(f), mode), size) for f in files])
    return pixels.transpose(0, 3, 1, 2) if channels == 3 else pixels


def _all_gray(files: list[Path]) -> bool:
    for f in files:
        try:
            with Image.open(f) as img:
                mode = img.mode
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
            raise UsageError(f"cannot read image {f}: {one_line(str(e), 120)}") from None
        if mode not in GRAY_MODES:
            return False
    return True


def _flatten(classes: dict[str, list[Path]], class_names: tuple[str, ...]) -> tuple[list[Path], np.ndarray]:
    files = [f for name in class_names for f in classes.get(name, [])]
    labels = [i for i, name in enumerate(class_names) for _ in classes.get(name, [])]
    return files, np.asarray(labels, dtype=np.int64)


def load_folder(path: Path, split: str, image_size: int | None, channels: int | None) -> ImageDataset:
    """A folder of images as a data set (options already checked)."""
    flat_name = path.resolve().name or str(path)
    split_layout = {d.name for d in _visible_dirs(path)} == {"train", "test"}
    if split_layout and not any(_is_image(p) for p in path.iterdir()):
        parts = {s: _scan(path / s, flat_name) for s in ("train", "test")}
        class_names = tuple(sorted(set(parts["train"]) | set(parts["test"])))
        train_files, train_labels = _flatten(parts["train"], class_names)
        test_files, test_labels = _flatten(parts["test"], class_names)
        files = train_files + test_files
        labels = np.concatenate([train_labels, test_labels])
        mask = np.arange(len(files)) >= len(train_files)
    else:
        classes = _scan(path, flat_name)
        class_names = tuple(sorted(classes))
        files, labels = _flatten(classes, class_names)
        mask = held_out_mask(labels, tenth)
    if channels is None:  # decided over every split, so train and test always agree
        channels = 1 if _all_gray(files) else 3
    keep = select(mask, split)
    if len(keep) == 0:
        raise UsageError(f"{path} has no held-out test images (a class needs at least 5 images for its 10% "
                         "share); use split='all' or train/ and test/ sub-folders")
    pixels = _load([files[i] for i in keep], image_size or DEFAULT_FOLDER_SIZE, channels)
    return ImageDataset(from_uint8(pixels), torch.from_numpy(labels[keep]), class_names, str(path))

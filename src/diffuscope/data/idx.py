"""MNIST-format IDX files (yann.lecun.com/exdb/mnist): read, write, and load as a data set.

An IDX file is: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
0x0E float64), a byte with the number of dimensions, each dimension as a big-endian uint32, then the values
big-endian in C order. Files may be gzip-compressed (detected from the content, whatever the name).

A data set is either a folder holding ``train-images-idx3-ubyte`` + ``train-labels-idx1-ubyte`` (optionally
``t10k-*`` for split="test"; split="all" = train + t10k; names may also use ``.idx3-ubyte`` and end in ``.gz``),
or the path of an images file with its labels file beside it (the name with "images" -> "labels" and "idx3" ->
"idx1"); a single file is loaded whole, whatever the split. Images must be uint8 [N, H, W] with H == W; labels
integers [N]. Labels all within 0..9 give classes "0".."9"; other labels become classes named by their sorted
distinct values.
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from diffuscope.checks import limits
from diffuscope.checks.errors import UsageError
from diffuscope.data.dataset import ImageDataset, fit_size, from_uint8, set_channels

IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_TYPE_CODES = {dt.newbyteorder(">"): code for code, dt in IDX_TYPES.items()}
_NAME = re.compile(r"^(train|t10k)-(images|labels)[-.]idx([13])-ubyte(\.gz)?$")


def _open(path: Path):
    """The IDX file as a byte stream, plain or gzip (by its magic bytes, not its name)."""
    with path.open("rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else path.open("rb")


def _header(f, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """(dtype, dimensions) from the start of an open IDX stream: magic number, type code, one uint32 per dim."""
    head = f.read(4)
    if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in IDX_TYPES or head[3] == 0:
        raise UsageError(f"{path} is not an IDX file (bad magic number {head[:4].hex() or 'empty'})")
    raw_dims = f.read(4 * head[3])
    if len(raw_dims) < 4 * head[3]:
        raise UsageError(f"{path} is not a valid IDX file (header cut short)")
    return IDX_TYPES[head[2]], struct.unpack(f">{head[3]}I", raw_dims)


def read_idx_header(path: str | Path) -> tuple[np.dtype, tuple[int, ...]]:
    """(dtype, dimensions) an IDX file declares, read from its header alone (plain or gzip): what the data will
    cost is known before any of it is read."""
    path = Path(path)
    try:
        with _open(path) as f:
            return _header(f, path)
    except (OSError, EOFError, zlib.error) as e:
        raise UsageError(f"cannot read IDX file {path}: {e}") from None


def check_images_header(path: Path, image_size: int | None, channels: int | None) -> tuple[int, ...]:
    """An IDX images file checked from its header before anything is read or converted: square uint8 images
    [N, H, W], N >= 1, the output side at most the U-Net's MAX_IMAGE_SIZE (smaller data sets are fine: 8x8
    digits), and the float32 copies (the conversion and the resized/recoloured output) within the memory limit.
    Returns the dimensions."""
    dtype, dims = read_idx_header(path)
    if dtype != np.uint8 or len(dims) != 3 or dims[1] != dims[2]:
        raise UsageError(f"{path}: expected square uint8 images [N, H, W], got {dtype} {dims}")
    n, side = dims[0], dims[1]
    if n == 0 or side == 0:
        raise UsageError(f"{path} declares {n} images of {side}x{side} pixels: a data set needs at least one image")
    out_side = image_size or side
    if out_side > limits.MAX_IMAGE_SIZE:
        hint = "" if image_size else " (pass --image-size to resize them)"
        raise UsageError(f"{path} holds {side}x{side} images: the image size must be at most "
                         f"{limits.MAX_IMAGE_SIZE}{hint}")
    c = channels or 1
    limits.check_memory(f"IDX images {path} ({n} x {side}x{side}, as float32)",
                        limits.images_bytes(n, (1, side, side)) + limits.images_bytes(n, (c, out_side, out_side)))
    return dims


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (plain or gzip); a malformed file raises UsageError naming it."""
    path = Path(path)
    try:
        # Streamed: the header is read first and the declared size bounded before the data is read, so neither a
        # header claiming 2^31 x 2^31 images nor a gzip bomb can allocate more than that bound.
        with _open(path) as f:
            dtype, dims = _header(f, path)
            expected = dtype.itemsize
            for d in dims:
                expected *= d
            if expected > limits.MAX_IDX_BYTES:
                raise UsageError(f"{path} declares dimensions {dims} = {limits.human_bytes(expected)} of data, more "
                                 f"than the limit of {limits.human_bytes(limits.MAX_IDX_BYTES)}")
            limits.check_memory(f"IDX file {path} ({dims})", 2 * expected)
            data = f.read(expected + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise UsageError(f"cannot read IDX file {path}: {e}") from None
    if len(data) != expected:
        found = f"{len(data)}" if len(data) <= expected else "more"
        raise UsageError(f"{path} is not a valid IDX file: dimensions {dims} need {expected} bytes of data, "
                         f"found {found}")
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write `array` as an IDX file; gzip-compressed when the name ends in .gz."""
    path = Path(path)
    array = np.asarray(array)
    big = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    if big not in _TYPE_CODES or array.ndim == 0:
        raise ValueError(f"IDX cannot store {array.dtype} arrays of {array.ndim} dimensions")
    data = (bytes([0, 0, _TYPE_CODES[big], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
            + np.ascontiguousarray(array, dtype=big).tobytes())
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)


def _idx_files(folder: Path) -> dict[tuple[str, str], Path]:
    """(prefix, kind) -> file, e.g. ("train", "images"); a plain file wins over its .gz twin."""
    found: dict[tuple[str, str], Path] = {}
    for p in sorted(folder.iterdir(), key=lambda p: (p.name.endswith(".gz"), p.name)):
        m = _NAME.match(p.name)
        if m and p.is_file() and (m[2] == "images") == (m[3] == "3"):
            found.setdefault((m[1], m[2]), p)
    return found


def is_idx_folder(folder: Path) -> bool:
    files = _idx_files(folder)
    return ("train", "images") in files or ("t10k", "images") in files


def labels_beside(images_path: Path) -> Path:
    """The labels file that goes with an images file, with or without .gz."""
    name = images_path.name.replace("images", "labels").replace("idx3", "idx1")
    stem = name.removesuffix(".gz")
    for candidate in (name, stem, stem + ".gz"):
        if candidate != images_path.name and images_path.with_name(candidate).is_file():
            return images_path.with_name(candidate)
    raise UsageError(f"no labels file beside {images_path} (looked for {stem} and {stem}.gz)")


def _read_pair(images_path: Path, labels_path: Path, image_size: int | None = None,
               channels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    check_images_header(images_path, image_size, channels)  # before a byte of data is read or converted
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise UsageError(f"{images_path}: expected square uint8 images [N, H, W], "
                         f"got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(images):
        raise UsageError(f"{labels_path}: expected {len(images)} integer labels, "
                         f"got {labels.dtype} {labels.shape}")
    return images, labels.astype(np.int64)


def load_idx(path: Path, split: str, image_size: int | None, channels: int | None) -> ImageDataset:
    """An IDX folder or images file as a data set (options already checked)."""
    if path.is_dir():
        files = _idx_files(path)
        present = [p for p in ("train", "t10k") if (p, "images") in files]
        prefixes = {"train": ["train"], "test": ["t10k"], "all": present}
        pairs = []
        for prefix in prefixes[split]:
            if (prefix, "images") not in files or (prefix, "labels") not in files:
                raise UsageError(f"{path} has no {prefix}-images-idx3-ubyte + {prefix}-labels-idx1-ubyte "
                                 f"(plain or .gz) for split={split!r}")
            pairs.append(_read_pair(files[prefix, "images"], files[prefix, "labels"], image_size, channels))
        if len({p[0].shape[1:] for p in pairs}) > 1:
            raise UsageError(f"{path}: train and test images differ in size")
        all_labels = [read_idx(files[p, "labels"]) for p in ("train", "t10k") if (p, "labels") in files]
    else:
        pairs = [_read_pair(path, labels_beside(path), image_size, channels)]
        all_labels = [pairs[0][1]]
    pixels = np.concatenate([p[0] for p in pairs])
    labels = np.concatenate([p[1] for p in pairs])
    values = np.unique(np.concatenate([np.asarray(v, dtype=np.int64) for v in all_labels]))
    if len(values) and values.min() >= 0 and values.max() <= 9:
        class_names = tuple(str(d) for d in range(10))
    else:
        class_names = tuple(str(v) for v in values)
        labels = np.searchsorted(values, labels)
    images = set_channels(fit_size(from_uint8(pixels), image_size), channels)
    return ImageDataset(images, torch.from_numpy(labels), class_names, str(path))

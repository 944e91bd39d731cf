"""The in-memory image data set every loader returns, and the tensor helpers the loaders share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from diffuscope.checks.errors import UsageError, choices_error, quote

SPLITS = ("train", "test", "all")
CHANNEL_CHOICES = (1, 3)


@dataclass(frozen=True)
class ImageDataset:
    """Images in [-1, 1] with integer class labels, all in memory.

    images:      float32 [N, C, H, W] with H == W, values in [-1, 1] (-1 = black)
    labels:      int64 [N], values in 0 .. num_classes - 1
    class_names: one name per class; the prompts of a class-conditional model (see ``prompts.class_index``)
    name:        "digits", "mnist", or the path the images came from
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.float32 or self.images.dim() != 4:
            raise ValueError(f"images must be float32 [N, C, H, W], got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.images.shape[2] != self.images.shape[3]:
            raise ValueError(f"images must be square, got {tuple(self.images.shape[2:])}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must be int64 [{self.images.shape[0]}], got {self.labels.dtype} "
                             f"{tuple(self.labels.shape)}")
        if not self.class_names:
            raise ValueError("a data set needs at least one class")
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in 0..{len(self.class_names) - 1}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (f"ImageDataset(name={self.name!r}, n={len(self)}, channels={self.channels}, "
                f"image_size={self.image_size}, classes={self.num_classes})")


def check_options(split: str, image_size: int | None, channels: int | None) -> None:
    """Reject bad loader options up front, in one line each."""
    if split not in SPLITS:
        raise choices_error("split", split, SPLITS)
    bad_size = isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    if image_size is not None and bad_size:
        raise UsageError(f"image_size must be a positive integer, got {quote(image_size)}")
    if channels is not None and channels not in CHANNEL_CHOICES:
        raise choices_error("channels", channels, CHANNEL_CHOICES)


def from_uint8(pixels: np.ndarray, max_value: float = 255.0) -> torch.Tensor:
    """Integer pixels in 0..max_value, [N, H, W] or [N, C, H, W] -> float32 [N, C, H, W] in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(pixels)).to(torch.float32)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return x.mul_(2.0 / max_value).sub_(1.0)


def set_channels(images: torch.Tensor, channels: int | None) -> torch.Tensor:
    """Grayscale [N, 1, H, W] -> repeated to 3 channels when asked; None or 1 keeps grayscale."""
    if channels is None or channels == images.shape[1]:
        return images
    if images.shape[1] == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    raise UsageError(f"cannot turn {images.shape[1]}-channel images into {channels} channels")


def fit_size(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """Square images [N, C, s, s] -> [N, C, size, size].

    Growing by at most a quarter (28 -> 32, 8 -> 10) pads with the background value -1, centred (the extra
    pixel of an odd difference goes right/bottom), so the original pixels are kept exactly. Any other size is
    resampled bilinearly (antialiased when shrinking).
    """
    native = images.shape[-1]
    if size is None or size == native:
        return images
    if native < size <= native + native // 4:
        before = (size - native) // 2
        after = size - native - before
        return F.pad(images, (before, after, before, after), mode="constant", value=-1.0)
    out = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                        antialias=size < native)
    return out.clamp_(-1.0, 1.0)

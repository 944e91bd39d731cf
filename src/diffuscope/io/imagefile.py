"""Reading an image file as a model's input: [C, H, W] in [-1, 1], nothing resized or converted silently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from diffuscope.checks.errors import UsageError


def _describe(channels: int, size: int) -> str:
    kind = "grayscale (mode L, 1 channel)" if channels == 1 else "RGB (mode RGB, 3 channels)"
    return f"{size}x{size} {kind}"


def load_image_file(path: str | Path, *, size: int, channels: int) -> Tensor:
    """A PNG/JPEG file -> [C, H, W] in [-1, 1]; it must already be ``size`` x ``size`` with ``channels`` channels
    (mode L for 1, RGB for 3): nothing is resized or converted silently."""
    from PIL import UnidentifiedImageError

    from diffuscope.checks import limits

    expected = _describe(channels, size)
    try:
        with limits.open_image(path) as im:  # bounded pixels and text chunks, decoder errors in one line
            mode, (w, h) = im.mode, im.size
            pixels = torch.from_numpy(np.asarray(im, dtype=np.float32).copy())
    except FileNotFoundError:
        raise UsageError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UsageError(f"cannot read image {path}: {e}") from None
    got_channels = {"L": 1, "RGB": 3}.get(mode)
    if got_channels is None or (w, h) != (size, size) or got_channels != channels:
        got = f"{w}x{h} mode {mode}" + (f" ({got_channels} channel{'s' * (got_channels > 1)})" if got_channels else "")
        raise UsageError(f"image {path} is {got}; expected {expected} to match the data set")
    pixels = pixels.reshape(h, w, channels).permute(2, 0, 1)
    return pixels / 127.5 - 1

"""Tensors in [-1, 1] -> uint8 pixels, PIL images and grids (Pillow only)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor


def to_uint8(images: Tensor) -> np.ndarray:
    """[N, C, H, W] (or [C, H, W]) in [-1, 1] -> uint8 [N, H, W, C]; values outside [-1, 1] are clipped."""
    if images.ndim == 3:
        images = images[None]
    x = ((images.detach().to(torch.float32).cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def to_pil(image: Tensor, scale: int = 1) -> Image.Image:
    """One image [C, H, W] in [-1, 1] -> a PIL image ("L" or "RGB"), optionally upscaled by nearest neighbour."""
    arr = to_uint8(image)[0]
    pil = Image.fromarray(arr[..., 0], "L") if arr.shape[-1] == 1 else Image.fromarray(arr, "RGB")
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    return pil


def image_grid(images: Tensor, nrow: int | None = None, padding: int = 2, scale: int = 1) -> Image.Image:
    """Tile [N, C, H, W] row-major into a grid (``nrow`` images per row, default ~square) with a white border."""
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    arr = to_uint8(images)
    grid = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, arr.shape[-1]), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = arr[i]
    pil = Image.fromarray(grid[..., 0], "L") if c == 1 else Image.fromarray(grid, "RGB")
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    return pil


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None, scale: int = 1) -> Path:
    from diffuscope.io.outputs import save_atomic

    grid = image_grid(images, nrow=nrow, scale=scale)
    return save_atomic(path, lambda f: grid.save(f, format="PNG"))

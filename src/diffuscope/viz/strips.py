"""Labelled strips of panels (forward and reverse process pictures) and animated GIFs of a trajectory (Pillow only).

A strip is one or more rows of equally sized panels. Each row may have a title above it and each panel a few lines
of caption under it; the whole figure may have a title on top. Geometry (``StripLayout``) is a pure function of the
panel count and size, so the picture's width is ``2 * PAD + n * cell + (n - 1) * GAP`` with
``cell = max(panel width, widest caption)`` (or the widest title plus margins, when that is wider).

The default font is Pillow's built-in one (ASCII only: captions say ``sigma``, not the Greek letter).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from diffuscope.viz.images import to_pil

PAD = 8  # outer margin, pixels
GAP = 6  # between panels
ROW_GAP = 10  # between rows
LINE_GAP = 2  # between text lines
TARGET_PANEL = 84  # panels are upscaled (nearest) to at least this many pixels: 28 -> 84, 8 -> 88
FONT_SIZE = 11
TEXT = (20, 20, 20)
TITLE = (70, 70, 160)
BACKGROUND = (255, 255, 255)


@lru_cache(maxsize=4)
def default_font(size: int = FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font (a scalable one from Pillow 10.1 on, the fixed bitmap font before)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def text_size(text: str, font=None) -> tuple[int, int]:
    """(width, height) of one line of text in pixels; height is the font's line height."""
    font = font or default_font()
    left, _, right, _ = font.getbbox(text or " ")
    _, top, _, bottom = font.getbbox("Ay(|")
    return right - min(left, 0), bottom - min(top, 0)


def panel_scale(image_size: int, target: int = TARGET_PANEL) -> int:
    """Nearest-neighbour upscale factor so that a panel is at least ``target`` pixels wide."""
    return max(1, math.ceil(target / max(1, image_size)))


@dataclass(frozen=True)
class StripLayout:
    """Where everything goes in a strip of ``rows`` x ``cols`` panels of ``panel_w`` x ``panel_h`` pixels."""

    rows: int
    cols: int
    panel_w: int
    panel_h: int
    cell_w: int  # max(panel_w, widest caption)
    line_h: int
    caption_lines: int
    has_row_titles: bool
    has_title: bool
    text_w: int = 0  # widest title or row title: the picture is at least this wide (plus margins)

    @property
    def title_h(self) -> int:
        return self.line_h + 2 * LINE_GAP if self.has_title else 0

    @property
    def row_h(self) -> int:
        title = self.line_h + LINE_GAP if self.has_row_titles else 0
        caption = self.caption_lines * (self.line_h + LINE_GAP) + LINE_GAP if self.caption_lines else 0
        return title + self.panel_h + caption

    @property
    def width(self) -> int:
        return 2 * PAD + max(self.cols * self.cell_w + (self.cols - 1) * GAP, self.text_w)

    @property
    def height(self) -> int:
        return 2 * PAD + self.title_h + self.rows * self.row_h + (self.rows - 1) * ROW_GAP

    def row_top(self, r: int) -> int:
        return PAD + self.title_h + r * (self.row_h + ROW_GAP)

    def panel_box(self, r: int, c: int) -> tuple[int, int]:
        """Top-left corner of panel (r, c)."""
        x = PAD + c * (self.cell_w + GAP) + (self.cell_w - self.panel_w) // 2
        y = self.row_top(r) + (self.line_h + LINE_GAP if self.has_row_titles else 0)
        return x, y


def strip_layout(rows: int, cols: int, panel_w: int, panel_h: int, captions: Sequence[Sequence[str]] = (),
                 row_titles: Sequence[str] | None = None, title: str | None = None, font=None) -> StripLayout:
    font = font or default_font()
    widest = max((text_size(line, font)[0] for cap in captions for line in cap), default=0)
    text_w = max((text_size(t, font)[0] for t in [*(row_titles or ()), title or ""]), default=0)
    return StripLayout(rows, cols, panel_w, panel_h, max(panel_w, widest), text_size("Ay", font)[1],
                       max((len(c) for c in captions), default=0), bool(row_titles), bool(title), text_w)


def labelled_strip(rows: Sequence[Tensor], captions: Sequence[Sequence[str]] = (), *,
                   row_titles: Sequence[str] | None = None, title: str | None = None,
                   scale: int | None = None) -> Image.Image:
    """Rows of images ([N, C, H, W] in [-1, 1], same N and size in every row) as one labelled RGB picture.

    ``captions[c]`` holds the lines written under panel c of every row; ``row_titles[r]`` is written above row r.
    """
    if not rows:
        raise ValueError("a strip needs at least one row")
    n, _, h, w = rows[0].shape
    if any(tuple(r.shape) != tuple(rows[0].shape) for r in rows):
        raise ValueError("every row of a strip needs the same number and size of images")
    if captions and len(captions) != n:
        raise ValueError(f"got {len(captions)} captions for {n} panels")
    if row_titles is not None and len(row_titles) != len(rows):
        raise ValueError(f"got {len(row_titles)} row titles for {len(rows)} rows")
    scale = scale or panel_scale(max(h, w))
    font = default_font()
    lay = strip_layout(len(rows), n, w * scale, h * scale, captions, row_titles, title, font)
    canvas = Image.new("RGB", (lay.width, lay.height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((PAD, PAD), title, fill=TEXT, font=font)
    for r, images in enumerate(rows):
        if row_titles:
            draw.text((PAD, lay.row_top(r)), row_titles[r], fill=TITLE, font=font)
        for c in range(n):
            x, y = lay.panel_box(r, c)
            canvas.paste(to_pil(images[c], scale).convert("RGB"), (x, y))
            cell_left = PAD + c * (lay.cell_w + GAP)
            ty = y + lay.panel_h + LINE_GAP
            for line in captions[c] if captions else ():
                tw = text_size(line, font)[0]
                draw.text((cell_left + (lay.cell_w - tw) // 2, ty), line, fill=TEXT, font=font)
                ty += lay.line_h + LINE_GAP
    return canvas


def save_png(image: Image.Image, path: str | Path) -> Path:
    from diffuscope.io.outputs import save_atomic

    return save_atomic(path, lambda f: image.save(f, format="PNG"))  # whole or nothing; a full disk: one line


def trajectory_frames(x_display: Tensor, denoised: Tensor, titles: Sequence[str], *,
                      headers: tuple[str, str] = ("x_t (VP scale)", "denoised"),
                      scale: int | None = None) -> list[Image.Image]:
    """One frame per step: the state and the predicted clean image side by side under a title line.

    ``x_display`` and ``denoised`` are [F, C, H, W] in [-1, 1] (the state already in display scale)."""
    if len(x_display) != len(denoised) or len(titles) != len(x_display):
        raise ValueError("need one state, one denoised image and one title per frame")
    captions = [[headers[0]], [headers[1]]]
    return [labelled_strip([torch.stack([x_display[i].cpu(), denoised[i].cpu().to(x_display.dtype)])], captions,
                           title=titles[i], scale=scale) for i in range(len(x_display))]


def save_gif(frames: Sequence[Image.Image], path: str | Path, *, duration_ms: int = 120,
             last_ms: int = 1500) -> Path:
    """An animated GIF that loops forever; the last frame is held for ``last_ms``."""
    if not frames:
        raise ValueError("a GIF needs at least one frame")
    from diffuscope.io.outputs import save_atomic

    durations = [duration_ms] * (len(frames) - 1) + [last_ms]
    frames = [f.convert("RGB") for f in frames]
    return save_atomic(path, lambda f: frames[0].save(f, format="GIF", save_all=True, append_images=frames[1:],
                                                      duration=durations, loop=0, optimize=False, disposal=1))

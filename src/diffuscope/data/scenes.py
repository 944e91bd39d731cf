"""The built-in ``scenes`` data set: 1 to 3 Twemoji on a coloured 64x64 canvas, captioned from their CLDR names.
Nothing is downloaded; every scene is drawn on the fly from sprites rendered once.

Scene    item i of a stream is a pure function of (stream seed, i) (``scene(i, seed)``): 1, 2 or 3 objects
         (probabilities 0.4, 0.4, 0.2), distinct emoji from the stream's vocabulary, each at one of ``SPRITE_SIZES``
         (16-28 px), at a uniformly random position that keeps ``BORDER`` px clear of the edges and does not overlap
         another object's box; the background is one of ``BACKGROUNDS`` (uniform).
Caption  "a red heart" / "a red heart and a cat face" / "a red heart, a cat face and a rocket" (objects in drawing
         order, not spatial order), with probability 0.5 followed by the background (" on blue"). A two-object scene
         states a spatial relation with probability 0.5 when one holds with room to spare (centres at least
         ``RELATION_MARGIN`` px apart along that axis): "a red heart left of a cat face" (also "right of", "above",
         "below"). Whatever the caption leaves open (positions, sizes, the background when unnamed) is left to the
         noise: for "a red heart" the stream holds the heart everywhere on every colour.
Vocabulary ``VOCABULARY``: 95 visually distinct emoji with short names (shapes in several colours, fruit and food,
         animal faces and animals, faces, objects), few enough that a small model sees each one thousands of times.
         ``HELD_OUT``: ``emoji.HELD_OUT_PROMPTS`` (blue heart, green apple, ..., tiger face, rabbit face), the emoji
         data set's held-out names, never drawn in a training scene; each combines words that training captions use.
Colours  ``BACKGROUNDS``: seven saturated colours with hues at least 40 degrees apart (red, yellow, green, teal,
         blue, purple, pink), so the background's hue names it (``background_name``).
Splits   "train": ``TRAIN_ITEMS`` items of the stream seeded ``TRAIN_SEED`` over ``VOCABULARY``; "test":
         ``TEST_ITEMS`` items of the stream seeded ``TEST_SEED`` whose first object is a held-out emoji (the others
         from the whole vocabulary); "all": both. The training loop takes an in-memory data set (``ImageDataset``:
         class_names are the distinct captions, labels index them), so the endless stream is trained on through
         this fixed window of the first ``TRAIN_ITEMS`` items (about 0.5 GB as float32 at 64x64; 6,607 distinct
         captions, the 95 bare single-object ones with 20-33 images each).

Graphics: Twemoji, Copyright 2020 Twitter, Inc and other contributors, licensed CC-BY 4.0
(https://creativecommons.org/licenses/by/4.0/); see docs/scenes_model_card.md.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.data.dataset import ImageDataset, fit_size, from_uint8
from diffuscope.data.emoji import HELD_OUT_PROMPTS, emoji_index

CANVAS = 64
BORDER = 2  # px kept clear of objects at every edge: the evaluator reads the background there
SPRITE_SIZES = (16, 20, 24, 28)
RELATION_MARGIN = 8  # px: a stated relation holds between the centres by at least this much
RELATIONS = ("left of", "right of", "above", "below")
OBJECT_COUNTS = (1, 2, 3)
COUNT_PROBS = (0.4, 0.4, 0.2)
P_BACKGROUND = 0.5  # the caption names the background colour
P_RELATION = 0.5  # a two-object caption states a relation (when one holds)
MIN_CONTRAST = 90.0  # RGB distance between an object's mean colour and its background
TRAIN_SEED, TEST_SEED = 31, 1031
TRAIN_ITEMS, TEST_ITEMS = 10_000, 1_000

VOCABULARY = (
    "red heart", "green heart", "yellow heart", "purple heart", "black heart", "red circle", "blue circle",
    "green circle", "orange circle", "red square", "blue square", "green square", "yellow square", "green book",
    "blue book",
    "red apple", "banana", "grapes", "watermelon", "lemon", "cherries", "strawberry", "pineapple", "carrot",
    "broccoli", "avocado", "pizza", "hamburger", "doughnut", "cookie", "ice cream", "birthday cake", "egg",
    "cheese wedge", "hot pepper", "tomato", "eggplant",
    "cat face", "dog face", "monkey face", "horse face", "mouse face", "frog", "panda", "penguin", "octopus", "fish",
    "turtle", "snail", "butterfly", "fox", "lion", "unicorn", "owl", "crab", "spider", "snake", "dolphin", "elephant",
    "grinning face", "crying face", "angry face", "thinking face", "robot", "ghost", "alien", "skull",
    "rocket", "bus", "taxi", "bicycle", "sun", "star", "rainbow", "fire", "droplet", "balloon", "soccer ball",
    "basketball", "guitar", "trophy", "crown", "key", "bell", "light bulb", "bomb", "gem stone", "house",
    "deciduous tree", "cactus", "sunflower", "rose", "mushroom", "snowman", "umbrella",
)
HELD_OUT = HELD_OUT_PROMPTS
ALL_NAMES = VOCABULARY + HELD_OUT

# name -> RGB 0..255: saturated, hues 0, 55, 120, 180, 225, 270, 320 degrees
BACKGROUNDS = {
    "red": (215, 50, 50),
    "yellow": (225, 205, 40),
    "green": (60, 165, 60),
    "teal": (40, 165, 165),
    "blue": (55, 95, 215),
    "purple": (135, 65, 200),
    "pink": (225, 80, 175),
}


@dataclass(frozen=True)
class SceneObject:
    name: str
    x: int  # top-left corner, pixels
    y: int
    size: int

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.size / 2, self.y + self.size / 2


@dataclass(frozen=True)
class Scene:
    """One scene: what is drawn and what the caption states (``relation``: None or (a, relation, b) between
    object indices; ``background_named``: the caption names ``background``)."""

    objects: tuple[SceneObject, ...]
    background: str
    background_named: bool
    relation: tuple[int, str, int] | None
    caption: str


def article(name: str) -> str:
    return f"an {name}" if name[0] in "aeio" or (name[0] == "u" and not name.startswith("uni")) else f"a {name}"


def caption_of(names: tuple[str, ...], relation: tuple[int, str, int] | None, background: str | None) -> str:
    """The caption of a scene: objects in order, the relation between two if stated, the background if named."""
    if relation is not None:
        a, rel, b = relation
        text = f"{article(names[a])} {rel} {article(names[b])}"
    elif len(names) == 1:
        text = article(names[0])
    else:
        text = ", ".join(article(n) for n in names[:-1]) + f" and {article(names[-1])}"
    return text if background is None else f"{text} on {background}"


def relation_holds(first: tuple[float, float], second: tuple[float, float], relation: str, margin: float) -> bool:
    """Whether centre ``first`` is ``relation`` centre ``second`` by at least ``margin`` px (y grows downwards)."""
    dx, dy = second[0] - first[0], second[1] - first[1]
    return {"left of": dx, "right of": -dx, "above": dy, "below": -dy}[relation] >= margin


def _place(rng: np.random.Generator, count: int, canvas: int) -> list[tuple[int, int, int]]:
    """``count`` non-overlapping boxes (x, y, size) inside the canvas's border (smaller sizes if crowded)."""
    for attempt in range(200):
        sizes = rng.choice(SPRITE_SIZES[:2] if attempt >= 100 else SPRITE_SIZES, size=count)
        boxes: list[tuple[int, int, int]] = []
        for s in sizes:
            s = int(s)
            hi = canvas - BORDER - s
            x, y = int(rng.integers(BORDER, hi + 1)), int(rng.integers(BORDER, hi + 1))
            if any(x < bx + bs and bx < x + s and y < by + bs and by < y + s for bx, by, bs in boxes):
                break
            boxes.append((x, y, s))
        if len(boxes) == count:
            return boxes
    raise RuntimeError(f"cannot place {count} objects on a {canvas}px canvas")  # never with CANVAS >= 64


@dataclass(frozen=True)
class SceneSpec:
    """What a caption asks for: objects, a relation between the first two (or None), a background (or None)."""

    names: tuple[str, ...]
    relation: str | None = None
    background: str | None = None

    @property
    def caption(self) -> str:
        return caption_of(self.names, None if self.relation is None else (0, self.relation, 1), self.background)


def backgrounds_for(names: tuple[str, ...]) -> tuple[str, ...]:
    """The backgrounds every one of these objects stands out from (mean colour at least ``MIN_CONTRAST`` away in
    RGB): no red apple on red. All of them if none is."""
    colours = mean_colours()
    fit = tuple(b for b, rgb in BACKGROUNDS.items()
                if all(np.linalg.norm(colours[n] - np.asarray(rgb, dtype=np.float64)) >= MIN_CONTRAST for n in names))
    return fit or tuple(BACKGROUNDS)


def draw_spec(rng: np.random.Generator, spec: SceneSpec, *, canvas: int = CANVAS) -> Scene:
    """A scene of exactly what ``spec`` asks for, everything else random: placements are drawn again until the
    stated relation holds by ``RELATION_MARGIN``; an unnamed background is drawn from ``backgrounds_for``."""
    for _ in range(1000):
        boxes = _place(rng, len(spec.names), canvas)
        objects = tuple(SceneObject(n, x, y, s) for n, (x, y, s) in zip(spec.names, boxes))
        if spec.relation is None or relation_holds(objects[0].centre, objects[1].centre, spec.relation,
                                                   RELATION_MARGIN):
            break
    else:
        raise RuntimeError(f"cannot place {spec.caption!r}")  # never: each relation holds for ~40% of placements
    fit = backgrounds_for(spec.names)
    background = spec.background or fit[int(rng.integers(len(fit)))]
    relation = None if spec.relation is None else (0, spec.relation, 1)
    return Scene(objects, background, spec.background is not None, relation, spec.caption)


def make_scene(rng: np.random.Generator, names: tuple[str, ...], *, background_named: bool, want_relation: bool,
               canvas: int = CANVAS) -> Scene:
    """A scene of these objects at random places on a background they stand out from; the caption names the
    background when ``background_named`` and states a relation when asked and one holds."""
    boxes = _place(rng, len(names), canvas)
    objects = tuple(SceneObject(n, x, y, s) for n, (x, y, s) in zip(names, boxes))
    relation = None
    if want_relation and len(objects) == 2:
        holding = [r for r in RELATIONS
                   if relation_holds(objects[0].centre, objects[1].centre, r, RELATION_MARGIN)]
        if holding:
            relation = (0, holding[int(rng.integers(len(holding)))], 1)
    fit = backgrounds_for(names)
    background = fit[int(rng.integers(len(fit)))]
    caption = caption_of(names, relation, background if background_named else None)
    return Scene(objects, background, background_named, relation, caption)


def scene(i: int, seed: int = TRAIN_SEED, *, held_out: bool = False) -> Scene:
    """Item ``i`` of the stream ``seed``: a pure function of (seed, i, held_out). ``held_out``: the first object is
    one of ``HELD_OUT`` (the test stream); else every object comes from ``VOCABULARY``."""
    if i < 0:
        raise UsageError(f"scene index must be >= 0, got {i}")
    rng = np.random.default_rng([seed, int(held_out), i])
    count = int(rng.choice(OBJECT_COUNTS, p=COUNT_PROBS))
    if held_out:
        first = HELD_OUT[int(rng.integers(len(HELD_OUT)))]
        rest = [n for n in ALL_NAMES if n != first]
        names = (first, *(rest[int(k)] for k in rng.choice(len(rest), size=count - 1, replace=False)))
    else:
        names = tuple(VOCABULARY[int(k)] for k in rng.choice(len(VOCABULARY), size=count, replace=False))
    named = bool(rng.random() < P_BACKGROUND)
    want_relation = bool(rng.random() < P_RELATION)
    return make_scene(rng, names, background_named=named, want_relation=want_relation)


@lru_cache(maxsize=1)
def mean_colours() -> dict[str, np.ndarray]:
    """name -> the alpha-weighted mean RGB (0..255, float64 [3]) of its largest sprite."""
    size = SPRITE_SIZES[-1]
    out = {}
    for name in ALL_NAMES:
        rgb, alpha = sprites()[name, size]
        out[name] = (rgb * alpha[..., None]).reshape(-1, 3).sum(0).astype(np.float64) / max(float(alpha.sum()), 1e-6)
    return out


@lru_cache(maxsize=1)
def sprites() -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
    """(name, size) -> (RGB float32 [s, s, 3] in 0..255, alpha float32 [s, s] in 0..1) of every emoji of
    ``ALL_NAMES`` at every ``SPRITE_SIZES`` (rendered once: about 3 MB)."""
    import torch.nn.functional as F
    from PIL import Image

    paths = dict(emoji_index())
    missing = [n for n in ALL_NAMES if n not in paths]
    if missing:
        raise RuntimeError(f"the installed twemoji/emoji packages lack {missing}")
    out = {}
    for name in ALL_NAMES:
        with Image.open(paths[name]) as im:
            rgba = torch.from_numpy(np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0).permute(2, 0, 1)
        # premultiplied, so the colours of transparent pixels do not bleed into the resampled edges
        pre = torch.cat([rgba[:3] * rgba[3:], rgba[3:]]).unsqueeze(0)
        for s in SPRITE_SIZES:
            small = F.interpolate(pre, size=(s, s), mode="bilinear", antialias=True, align_corners=False)[0]
            alpha = small[3].clamp(0.0, 1.0)
            rgb = (small[:3] / alpha.clamp_min(1e-3)).clamp(0.0, 1.0) * (alpha > 1e-3)
            out[name, s] = (rgb.permute(1, 2, 0).numpy() * 255.0, alpha.numpy())
    return out


def draw(sc: Scene, canvas: int = CANVAS) -> np.ndarray:
    """The scene's pixels: uint8 [canvas, canvas, 3]."""
    img = np.empty((canvas, canvas, 3), dtype=np.float32)
    img[:] = BACKGROUNDS[sc.background]
    table = sprites()
    for o in sc.objects:
        rgb, alpha = table[o.name, o.size]
        region = img[o.y:o.y + o.size, o.x:o.x + o.size]
        region *= 1.0 - alpha[..., None]
        region += rgb * alpha[..., None]
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def background_name(rgb: tuple[float, float, float]) -> str:
    """The ``BACKGROUNDS`` name whose hue is nearest to that of ``rgb`` (0..255)."""
    hue = colorsys.rgb_to_hsv(*(c / 255.0 for c in rgb))[0]

    def distance(name: str) -> float:
        h = colorsys.rgb_to_hsv(*(c / 255.0 for c in BACKGROUNDS[name]))[0]
        d = abs(hue - h) % 1.0
        return min(d, 1.0 - d)

    return min(BACKGROUNDS, key=distance)


def scenes_of(split: str) -> list[Scene]:
    """The scenes of a split ("train", "test" or "all"), in data-set order."""
    parts = []
    if split in ("train", "all"):
        parts += [scene(i, TRAIN_SEED) for i in range(TRAIN_ITEMS)]
    if split in ("test", "all"):
        parts += [scene(i, TEST_SEED, held_out=True) for i in range(TEST_ITEMS)]
    return parts


def dataset_of(items: list[Scene], image_size: int | None = None, name: str = "scenes") -> ImageDataset:
    """Scenes -> an ``ImageDataset``: class_names are the distinct captions (first-seen order), labels index them."""
    if not items:
        raise UsageError("a scenes data set needs at least one scene")
    captions: dict[str, int] = {}
    labels = [captions.setdefault(sc.caption, len(captions)) for sc in items]
    pixels = np.stack([draw(sc) for sc in items]).transpose(0, 3, 1, 2)
    images = fit_size(from_uint8(pixels, 255.0), image_size)
    return ImageDataset(images, torch.tensor(labels, dtype=torch.int64), tuple(captions), name)


def load_scenes(split: str, image_size: int | None, channels: int | None) -> ImageDataset:
    """The scenes data set (options already checked): RGB, 64x64 unless ``image_size`` resamples it."""
    if channels not in (None, 3):
        raise UsageError(f"the scenes data set is in colour: channels must be 3, got {channels}")
    return dataset_of(scenes_of(split), image_size)

"""The scenes evaluator: does a generated 64x64 scene hold the captioned emoji, where the caption puts them, on the
captioned background? It reads pixels only (decoded images), knowing the emoji sprites the data set draws with.

Objects     ``SceneJudge.locate``: normalised cross-correlation (all three channels together) of the image with the
            emoji's sprite at each of the data set's sizes and every position; the sprite is composited on the
            image's own background colour (read from the border) and framed by ``PAD`` px of it, so the shape's
            outline counts, not only its colour (a red square does not match inside a red heart). Found: the best
            score reaches ``FOUND_THRESHOLD``; its place is the object's centre.
Relation    both objects found and their centres in the stated order by at least ``RELATION_TOLERANCE`` px.
Background  the hue of the median border pixel, named by ``data.scenes.background_name``.
Spread      for captions that leave layout open: the distance between an object's centres in two seeds' images,
            as a fraction of the canvas side (data: about 0.3; a model whose noise does not decide the layout: 0).

Evaluation set (``evaluation_set``): fixed and seeded; single-object captions, two-object captions without and
with a relation, half of each naming the background; the held-out names (``data.scenes.HELD_OUT``) in their own
groups. Rates carry Wilson 95% intervals, the spread a percentile bootstrap interval.

    judge = SceneJudge()
    specs = evaluation_set()
    images = real_scene_images(specs, seeds=(0, 1))   # [seeds, prompts, 3, 64, 64]: ground truth for checking
    report = evaluate_scenes(judge, specs, images)
    print(format_report(report))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from diffuscope.checks.errors import UsageError
from diffuscope.data.scenes import (
    ALL_NAMES,
    BORDER,
    CANVAS,
    HELD_OUT,
    RELATION_MARGIN,
    RELATIONS,
    SPRITE_SIZES,
    VOCABULARY,
    SceneSpec,
    background_name,
    backgrounds_for,
    draw,
    draw_spec,
    relation_holds,
    sprites,
)
from diffuscope.metrics.stats import bootstrap_ci

PAD = 2  # px of background framing each sprite template
FOUND_THRESHOLD = 0.6
RIVAL_RADIUS = 3
RELATION_TOLERANCE = RELATION_MARGIN / 2
EVAL_SEED = 2031
GROUP_SIZES = {"single": 24, "pair": 24, "relation": 24}  # prompts per group (held-out groups: one per name)


@dataclass(frozen=True)
class Detection:
    name: str
    score: float  # best normalised cross-correlation, -1..1
    centre: tuple[float, float]  # x, y in pixels
    size: int
    rival: float = -1.0  # the best score of any other known emoji centred within RIVAL_RADIUS px of it

    @property
    def found(self) -> bool:
        """Matched well enough, and better than every other emoji there (a tomato is not a red heart)."""
        return self.score >= FOUND_THRESHOLD and self.score > self.rival


@dataclass(frozen=True)
class SceneJudgement:
    spec: SceneSpec
    detections: tuple[Detection, ...]
    background: str  # the background's colour name as read

    @property
    def all_found(self) -> bool:
        return all(d.found for d in self.detections)

    @property
    def relation_right(self) -> bool | None:
        """None where the caption states no relation."""
        if self.spec.relation is None:
            return None
        a, b = self.detections[:2]
        return a.found and b.found and relation_holds(a.centre, b.centre, self.spec.relation, RELATION_TOLERANCE)

    @property
    def background_right(self) -> bool | None:
        """None where the caption names no background."""
        return None if self.spec.background is None else self.background == self.spec.background


class SceneJudge:
    """Finds the data set's emoji in 64x64 RGB images in [-1, 1] (see the module's docstring)."""

    def __init__(self) -> None:
        table = sprites()
        # size -> (RGB [K, 3, s, s] 0..255, alpha [K, 1, s, s]) of every emoji, in ALL_NAMES order
        self._stacked = {s: (torch.stack([torch.from_numpy(table[n, s][0]).permute(2, 0, 1) for n in ALL_NAMES]),
                             torch.stack([torch.from_numpy(table[n, s][1])[None] for n in ALL_NAMES]))
                         for s in SPRITE_SIZES}
        self._cache: dict = {}

    def check_images(self, images: Tensor) -> None:
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, CANVAS, CANVAS):
            raise UsageError(f"the scenes evaluator takes RGB {CANVAS}x{CANVAS} images, got {tuple(images.shape)}")

    @staticmethod
    def border_colour(image: Tensor) -> tuple[float, float, float]:
        """Median RGB (0..255) of the ``BORDER``-px frame of one image [3, H, W] in [-1, 1]."""
        px = (image.double().clamp(-1, 1) + 1) * 127.5
        mask = torch.ones(px.shape[1:], dtype=torch.bool)
        mask[BORDER:-BORDER, BORDER:-BORDER] = False
        med = px[:, mask].median(dim=1).values
        return float(med[0]), float(med[1]), float(med[2])

    def locate(self, image: Tensor, name: str, background: tuple[float, float, float] | None = None) -> Detection:
        """The best match of emoji ``name`` over sizes and positions in one image [3, H, W] in [-1, 1]."""
        return self.locate_all(image, (name,), background)[0]

    def scores(self, image: Tensor, background: tuple[float, float, float]) -> list[Tensor]:
        """Per sprite size, the normalised cross-correlation of every known emoji (``ALL_NAMES`` order) at every
        position: [K, H - s + 1, W - s + 1], position = the sprite's top-left corner.

        Template k of size s is T = alpha * (rgb - bg), framed by PAD px of zeros, against the image minus bg (also
        framed by PAD px of it); its correlation with the image is split into bg-free parts (alpha * rgb and alpha,
        transformed once in ``__init__``) and computed by FFT (no wrap-around at the valid positions)."""
        bg = torch.tensor(background, dtype=torch.float32)
        px = (image.float().clamp(-1, 1) + 1) * 127.5
        px = F.pad((px - bg[:, None, None])[None], (PAD, PAD, PAD, PAD))[0]  # [3, Hp, Wp]
        hp, wp = px.shape[1:]
        spectrum = torch.fft.rfft2(px)  # [3, Hp, Wp/2+1]
        maps = []
        for s in SPRITE_SIZES:
            k = s + 2 * PAD
            n = 3 * k * k
            f_a, f_alpha, sums = self._spectra(s, (hp, wp))
            sum_a, sum_alpha, sum_a2, sum_a_alpha, sum_alpha2 = sums  # [K, 3] / [K] / [K, 3] / [K, 3] / [K]
            mean_t = (sum_a.sum(1) - bg.sum() * sum_alpha) / n  # [K]
            t_sq = (sum_a2 - 2 * bg * sum_a_alpha + bg.pow(2) * sum_alpha2[:, None]).sum(1)
            t_norm = (t_sq - n * mean_t.pow(2)).clamp_min(1e-6)
            g = f_a - bg[None, :, None, None] * f_alpha[:, None]  # [K, 3, Hp, Wp/2+1]
            corr = torch.fft.irfft2((spectrum[None] * g.conj()).sum(1), s=(hp, wp))[:, :hp - k + 1, :wp - k + 1]
            s1 = F.avg_pool2d(px.sum(0)[None, None], k, stride=1)[0, 0] * (k * k)
            s2 = F.avg_pool2d(px.pow(2).sum(0)[None, None], k, stride=1)[0, 0] * (k * k)
            var = (s2 - s1.pow(2) / n).clamp_min(1e-3 * n)
            num = corr - mean_t[:, None, None] * s1[None]
            maps.append(num / (var[None] * t_norm[:, None, None]).sqrt())
        return maps

    def _spectra(self, s: int, shape: tuple[int, int]):
        """(FFT of alpha*rgb [K, 3, ...], FFT of alpha [K, ...], the sums ``scores`` needs) of the framed sprites of
        size ``s``, zero-padded to ``shape``; cached."""
        key = (s, shape)
        if key not in self._cache:
            rgb, alpha = self._stacked[s]
            a = F.pad(rgb * alpha, (PAD, PAD, PAD, PAD))
            al = F.pad(alpha[:, 0], (PAD, PAD, PAD, PAD))
            sums = (a.sum((2, 3)), al.sum((1, 2)), a.pow(2).sum((2, 3)), (a * al[:, None]).sum((2, 3)),
                    al.pow(2).sum((1, 2)))
            self._cache[key] = (torch.fft.rfft2(a, s=shape), torch.fft.rfft2(al, s=shape), sums)
        return self._cache[key]

    def locate_all(self, image: Tensor, names: tuple[str, ...],
                   background: tuple[float, float, float] | None = None) -> tuple[Detection, ...]:
        """The best match of each emoji of ``names`` over sizes and positions in one image [3, H, W] in [-1, 1],
        with the best score any other emoji reaches around it (centre within ``RIVAL_RADIUS`` px)."""
        unknown = [n for n in names if n not in ALL_NAMES]
        if unknown:
            raise UsageError(f"the scenes evaluator does not know the emoji {unknown[0]!r}")
        maps = self.scores(image, background or self.border_colour(image))
        found = []
        for name in names:
            k = ALL_NAMES.index(name)
            score, centre, size = -1.0, (0.0, 0.0), SPRITE_SIZES[0]
            for s, m in zip(SPRITE_SIZES, maps):
                value, flat = m[k].flatten().max(0)
                if float(value) > score:
                    y, x = divmod(int(flat), m.shape[2])
                    score, centre, size = float(value), (x + s / 2, y + s / 2), s
            rival = -1.0
            for s, m in zip(SPRITE_SIZES, maps):  # other emoji centred near the found centre, any size
                x0, y0 = round(centre[0] - s / 2), round(centre[1] - s / 2)
                window = m[:, max(0, y0 - RIVAL_RADIUS):y0 + RIVAL_RADIUS + 1,
                           max(0, x0 - RIVAL_RADIUS):x0 + RIVAL_RADIUS + 1]
                if window.numel():
                    others = torch.cat([window[:k], window[k + 1:]])
                    rival = max(rival, float(others.max()))
            found.append(Detection(name, score, centre, size, rival))
        return tuple(found)

    def judge(self, image: Tensor, spec: SceneSpec) -> SceneJudgement:
        colour = self.border_colour(image)
        return SceneJudgement(spec, self.locate_all(image, spec.names, colour), background_name(colour))


def evaluation_set(seed: int = EVAL_SEED) -> dict[str, tuple[SceneSpec, ...]]:
    """group -> its captions: "single", "pair" (no relation), "relation" (training names) and "held-out single",
    "held-out relation" (one held-out name first); in each, every other caption names a background."""
    rng = np.random.default_rng(seed)

    def background(i: int, names: tuple[str, ...]) -> str | None:
        fit = backgrounds_for(names)
        return fit[int(rng.integers(len(fit)))] if i % 2 else None

    def pick(count: int, pool: tuple[str, ...] = VOCABULARY) -> tuple[str, ...]:
        return tuple(pool[int(k)] for k in rng.choice(len(pool), size=count, replace=False))

    groups: dict[str, list[SceneSpec]] = {"single": [], "pair": [], "relation": [], "held-out single": [],
                                          "held-out relation": []}
    for i in range(GROUP_SIZES["single"]):
        names = pick(1)
        groups["single"].append(SceneSpec(names, None, background(i, names)))
    for i in range(GROUP_SIZES["pair"]):
        names = pick(2)
        groups["pair"].append(SceneSpec(names, None, background(i, names)))
    for i in range(GROUP_SIZES["relation"]):
        names = pick(2)
        groups["relation"].append(SceneSpec(names, RELATIONS[i % len(RELATIONS)], background(i, names)))
    for i, held in enumerate(HELD_OUT):
        groups["held-out single"].append(SceneSpec((held,), None, background(i, (held,))))
        names = (held, *pick(1))
        groups["held-out relation"].append(SceneSpec(names, RELATIONS[i % len(RELATIONS)], background(i, names)))
    return {k: tuple(v) for k, v in groups.items()}


def flat_specs(groups: dict[str, tuple[SceneSpec, ...]]) -> tuple[SceneSpec, ...]:
    return tuple(s for specs in groups.values() for s in specs)


def real_scene_images(specs: tuple[SceneSpec, ...], seeds: tuple[int, ...] = (0, 1),
                      seed: int = EVAL_SEED) -> Tensor:
    """Data-set scenes drawn to each caption (ground truth): float32 [len(seeds), len(specs), 3, 64, 64] in [-1, 1];
    image (s, p) is a pure function of (seed, p, seeds[s])."""
    out = np.stack([np.stack([draw(draw_spec(np.random.default_rng([seed, p, sd]), spec))
                              for p, spec in enumerate(specs)]) for sd in seeds])
    return torch.from_numpy(out).permute(0, 1, 4, 2, 3).float().div(127.5).sub(1.0)


@dataclass(frozen=True)
class Rate:
    hits: int
    n: int
    low: float  # Wilson 95% interval
    high: float

    @property
    def estimate(self) -> float:
        return self.hits / self.n if self.n else float("nan")


def wilson(hits: int, n: int, z: float = 1.959964) -> Rate:
    """The Wilson score interval of a binomial proportion (Wilson 1927)."""
    if n == 0:
        return Rate(0, 0, float("nan"), float("nan"))
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Rate(hits, n, max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Spread:
    mean: float  # fraction of the canvas side
    low: float  # percentile bootstrap 95% interval
    high: float
    n: int


@dataclass(frozen=True)
class SceneReport:
    """measure -> Rate (or Spread for "spread"), per part of the evaluation set ("train names", "held-out")."""

    rows: dict[str, Rate | Spread]
    judgements: tuple[tuple[SceneJudgement, ...], ...]  # [seed][prompt]


def _spread(first: tuple[SceneJudgement, ...], second: tuple[SceneJudgement, ...]) -> Spread:
    dists = [math.dist(a.centre, b.centre) / CANVAS
             for j1, j2 in zip(first, second) if j1.spec.relation is None
             for a, b in zip(j1.detections, j2.detections) if a.found and b.found]
    if not dists:
        return Spread(float("nan"), float("nan"), float("nan"), 0)
    d = np.asarray(dists)
    ci = bootstrap_ci(lambda x: float(np.mean(x)), d, n_resamples=1000, seed=0)
    return Spread(float(d.mean()), ci.low, ci.high, len(d))


def evaluate_scenes(judge: SceneJudge, groups: dict[str, tuple[SceneSpec, ...]], images: Tensor) -> SceneReport:
    """Judge ``images`` [seeds, prompts, 3, 64, 64] (prompt p made for ``flat_specs(groups)[p]``)."""
    specs = flat_specs(groups)
    if images.dim() != 5 or images.shape[1] != len(specs):
        raise UsageError(f"expected images [seeds, {len(specs)}, 3, {CANVAS}, {CANVAS}], got {tuple(images.shape)}")
    judge.check_images(images[0])
    judged = tuple(tuple(judge.judge(images[s, p], spec) for p, spec in enumerate(specs))
                   for s in range(images.shape[0]))
    group_of = [g for g, members in groups.items() for _ in members]
    rows: dict[str, Rate | Spread] = {}

    def rate(label: str, part: tuple[str, ...], value) -> None:
        outcomes = [value(j) for row in judged for j, g in zip(row, group_of) if g in part]
        outcomes = [o for o in outcomes if o is not None]
        rows[label] = wilson(sum(bool(o) for o in outcomes), len(outcomes))

    for prefix, part in (("", ("single", "pair", "relation")), ("held-out ", ("held-out single", "held-out relation"))):
        singles = tuple(g for g in part if g.endswith("single"))
        pairs = tuple(g for g in part if not g.endswith("single"))
        rate(f"{prefix}single found", singles, lambda j: j.all_found)
        rate(f"{prefix}two-object both found", pairs, lambda j: j.all_found)
        rate(f"{prefix}relation right", part, lambda j: j.relation_right)
        rate(f"{prefix}background right", part, lambda j: j.background_right)
    if len(judged) >= 2:
        rows["spread (no relation)"] = _spread(judged[0], judged[1])
    return SceneReport(rows, judged)


def format_report(report: SceneReport) -> str:
    lines = [f"{'measure':<34} {'value':>7}  {'95% interval':<15} {'n':>4}"]
    for label, row in report.rows.items():
        if isinstance(row, Rate):
            lines.append(f"{label:<34} {row.estimate:>7.1%}  [{row.low:.1%}, {row.high:.1%}]".ljust(60)
                         + f"{row.n:>4}")
        else:
            lines.append(f"{label:<34} {row.mean:>7.3f}  [{row.low:.3f}, {row.high:.3f}]".ljust(60) + f"{row.n:>4}")
    return "\n".join(lines)

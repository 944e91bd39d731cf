"""Prompt faithfulness by retrieval, and colour measures, for colour images with one real image per prompt (emoji).

Retrieval: a generated image counts as faithful when its nearest real image, in a simple colour-sensitive space
(pixels at 16x16, L2), is the prompted one: top-1, and top-5 among the whole gallery (chance 1/N and 5/N).
ImageNet-style features are nearly colour-blind (ANCHORS.md: an RGB->BGR swap barely moves FD), so a red heart
drawn for "blue heart" would pass there; in pixel space it does not. Ties count against the image: an exact
duplicate in the gallery at the same distance ranks ahead of the target, which is what keeps the real-vs-real
ceiling (``retrieval_ceiling``) under 100%.

Colour: the joint RGB histogram (8 levels per channel) of the non-background pixels, pooled over a set; the
distance between two sets is the total variation between their histograms (0 = same colours, 1 = disjoint).
``mean_hue`` gives the circular mean hue of the saturated pixels, for colour-binding checks ("red heart" vs
"green heart").

    gallery = RetrievalGallery(real.images, real.class_names)
    result = gallery.score(generated, targets)        # targets: gallery indices or prompts; .top1, .top5
    ceiling = retrieval_ceiling(gallery)              # real images as the "generated" ones
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from diffuscope.checks.errors import UsageError, quote
from diffuscope.metrics.judge import Judgement

RETRIEVAL_SIZE = 16
HIST_LEVELS = 8
BACKGROUND = 0.94  # pixels with every channel above this (in [-1, 1]) are the white background


def retrieval_features(images: Tensor, size: int = RETRIEVAL_SIZE) -> Tensor:
    """Images [N, C, H, W] in [-1, 1] -> flattened pixels at size x size (area-averaged): [N, C * size * size]."""
    if images.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W], got {tuple(images.shape)}")
    x = images.detach().float().cpu()
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="area") if x.shape[-1] >= size else \
            F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.flatten(1)


@dataclass(frozen=True)
class Retrieval:
    """Where each query's target ranks among the gallery (0 = nearest), and the accuracies that follow."""

    ranks: Tensor  # [N] int64
    nearest: Tensor  # [N] int64: gallery index of each query's nearest image
    gallery_size: int

    @property
    def top1(self) -> float:
        return float((self.ranks < 1).float().mean()) if len(self.ranks) else float("nan")

    @property
    def top5(self) -> float:
        return float((self.ranks < 5).float().mean()) if len(self.ranks) else float("nan")

    def top(self, k: int) -> float:
        return float((self.ranks < k).float().mean()) if len(self.ranks) else float("nan")

    @property
    def chance_top1(self) -> float:
        return 1.0 / self.gallery_size


class RetrievalGallery:
    """The real images, one per prompt, in retrieval space."""

    def __init__(self, images: Tensor, prompts: Sequence[str], size: int = RETRIEVAL_SIZE):
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} gallery images but {len(prompts)} prompts")
        self.size = size
        self.prompts = tuple(prompts)
        self.features = retrieval_features(images, size)
        self._index = {p.casefold(): i for i, p in enumerate(self.prompts)}

    def __len__(self) -> int:
        return len(self.prompts)

    def index(self, prompt: str) -> int:
        i = self._index.get(" ".join(str(prompt).split()).casefold())
        if i is None:
            raise UsageError(f"prompt {quote(prompt)} has no real image in the retrieval gallery")
        return i

    def score(self, images: Tensor, targets: Sequence[int | str] | Tensor, batch_size: int = 512) -> Retrieval:
        """Rank of each image's target (a gallery index or a prompt) by L2 distance; ties rank ahead."""
        if isinstance(targets, Tensor):
            target = targets.long().cpu()
        else:
            target = torch.tensor([t if isinstance(t, int) else self.index(t) for t in targets], dtype=torch.long)
        if len(target) != len(images):
            raise ValueError(f"{len(images)} images but {len(target)} targets")
        query = retrieval_features(images, self.size)
        ranks, nearest = [], []
        for q, t in zip(query.split(batch_size), target.split(batch_size)):
            d = torch.cdist(q.double(), self.features.double())  # float64: exact duplicates tie exactly
            own = d.gather(1, t[:, None])
            others = d <= own
            others[torch.arange(len(t)), t] = False
            ranks.append(others.sum(1))
            nearest.append(d.argmin(1))
        return Retrieval(torch.cat(ranks), torch.cat(nearest), len(self))


def retrieval_ceiling(gallery: RetrievalGallery, images: Tensor | None = None) -> Retrieval:
    """Real-vs-real: the gallery's own images (or stand-ins for them, e.g. autoencoder reconstructions, in gallery
    order) retrieved among the gallery. Under 100% only where images tie with another at the retrieval size."""
    if images is None:
        query = gallery.features.view(len(gallery), -1, gallery.size, gallery.size)
    else:
        query = images
    return gallery.score(query, torch.arange(len(gallery)))


def _foreground(images: Tensor) -> Tensor:
    """[N, H*W] bool: pixels that are not the white background."""
    return ~(images > BACKGROUND).all(1).flatten(1)


def colour_histogram(images: Tensor, levels: int = HIST_LEVELS) -> Tensor:
    """The pooled joint RGB histogram of a set's foreground pixels: [levels**3], summing to 1."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"colour histograms need RGB images [N, 3, H, W], got {tuple(images.shape)}")
    x = images.detach().float().cpu()
    q = ((x.clamp(-1, 1) + 1) / 2 * levels).long().clamp_(0, levels - 1)  # [N, 3, H, W] bin per channel
    code = (q[:, 0] * levels + q[:, 1]) * levels + q[:, 2]
    code = code.flatten(1)[_foreground(x)]
    hist = torch.bincount(code, minlength=levels**3).double()
    return (hist / hist.sum().clamp_min(1)).float()


def histogram_distance(a: Tensor, b: Tensor, levels: int = HIST_LEVELS) -> float:
    """Total variation between the pooled colour histograms of two image sets: 0 (same) .. 1 (disjoint colours)."""
    return 0.5 * float((colour_histogram(a, levels) - colour_histogram(b, levels)).abs().sum())


def mean_hue(images: Tensor, min_saturation: float = 0.25) -> Tensor:
    """Circular mean hue in degrees [0, 360) of each image's saturated, non-background pixels: [N] (NaN when an
    image has none)."""
    x = (images.detach().float().cpu().clamp(-1, 1) + 1) / 2
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    mx, mn = x.max(1).values, x.min(1).values
    delta = mx - mn
    sat = delta / mx.clamp_min(1e-6)
    safe = delta.clamp_min(1e-6)
    hue = torch.where(mx == r, ((g - b) / safe) % 6, torch.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4))
    angle = hue * (math.pi / 3)
    keep = ((sat >= min_saturation) & _foreground(images.detach().cpu()).view_as(sat)).float()
    s, c = (torch.sin(angle) * keep).flatten(1).sum(1), (torch.cos(angle) * keep).flatten(1).sum(1)
    out = torch.rad2deg(torch.atan2(s, c)) % 360
    return torch.where(keep.flatten(1).sum(1) > 0, out, torch.full_like(out, float("nan")))


class RetrievalJudge:
    """The 'classifier' of a data set with one real image per prompt (emoji): an image is judged to show the
    gallery image nearest to it in retrieval space, so "accuracy vs prompt" is retrieval top-1, and its features
    are that colour-sensitive space (pixels at 16x16). A ``metrics.judge.Judge``."""

    measures = Judgement.RETRIEVAL

    def __init__(self, images: Tensor, prompts: Sequence[str], data: str, size: int = RETRIEVAL_SIZE,
                 features=None, features_name: str = ""):
        self.gallery = RetrievalGallery(images, prompts, size)
        self._features = features  # distribution features (FD/KID): e.g. EfficientNet-Lite0; None = retrieval space
        self.features_name = features_name or f"pixels at {size}x{size}"
        self.images = images
        self.image_shape = tuple(images.shape[1:])
        self.data = data
        self.ceiling_top1 = retrieval_ceiling(self.gallery).top1

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.gallery.prompts

    def features(self, images: Tensor) -> Tensor:
        if self._features is not None:
            return self._features(images)
        return retrieval_features(images, self.gallery.size)

    def predict(self, images: Tensor) -> Tensor:
        """The gallery index of each image's nearest real image (L2 in retrieval space)."""
        query = retrieval_features(images, self.gallery.size).double()
        return torch.cat([torch.cdist(q, self.gallery.features.double()).argmin(1) for q in query.split(512)])

    def check_images(self, images: Tensor) -> None:
        if tuple(images.shape[1:]) != self.image_shape:
            raise UsageError(f"the retrieval gallery holds {'x'.join(map(str, self.image_shape))} images, got "
                             f"{'x'.join(map(str, images.shape[1:]))}")

    def describe(self) -> dict:
        return {"path": f"retrieval among the {len(self.gallery)} {self.data} images (pixels at "
                        f"{self.gallery.size}x{self.gallery.size})", "data": self.data,
                "held_out_accuracy": self.ceiling_top1, "kind": self.measures.value, "features": self.features_name}

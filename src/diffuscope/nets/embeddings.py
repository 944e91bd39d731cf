"""Embeddings of the noise level and the class label (or pooled text), mapped to one conditioning vector per sample.

The network never sees sigma itself but the preconditioned `c_noise` (Karras et al. 2022, Table 1):
`log(sigma) / 4` for EDM, the timestep 0..999 for a DDPM-trained model (Ho et al. 2020).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NOISE_EMBEDDINGS = ("fourier", "positional")


class PositionalEmbedding(nn.Module):
    """Sinusoidal features, geometric frequencies 1 .. 1/max_period (Vaswani et al. 2017), as used for DDPM
    timesteps by Ho et al. 2020 and Dhariwal & Nichol 2021. Output `[cos | sin]`, shape [B, dim]."""

    def __init__(self, dim: int, max_period: float = 10_000.0):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)  # a pure function of (dim, max_period)

    def forward(self, x: Tensor) -> Tensor:
        angles = x.float()[:, None] * self.freqs[None, :]
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features `cos/sin(2 pi f x)`, f ~ N(0, scale^2) fixed at init (Tancik et al. 2020;
    Song et al. 2021 NCSN++; Karras et al. 2022 `FourierEmbedding`). The frequencies are a saved buffer, so a
    checkpoint restores them exactly. EDM uses scale 16 for NCSN++, where c_noise = ln(sigma / 2) spans
    ~10 units; for c_noise = ln(sigma) / 4 (~2.6 units for sigma in [0.002, 80]) scale 1 gives a few periods
    over the range, which keeps the embedding a smooth function of sigma for a small network."""

    def __init__(self, dim: int, scale: float = 1.0):
        super().__init__()
        self.register_buffer("freqs", torch.randn(dim // 2) * scale)

    def forward(self, x: Tensor) -> Tensor:
        angles = (2 * math.pi) * x.float()[:, None] * self.freqs[None, :]
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class ConditionEmbedding(nn.Module):
    """c_noise (and class label) -> one vector per sample; every residual block maps it to a scale and shift.

    noise features [B, dim] (+ class embedding [B, dim]) -> Linear -> SiLU -> Linear -> SiLU -> [B, emb_dim].
    The class embedding is added before the MLP, as in EDM's SongUNet (Karras et al. 2022), so the MLP can mix
    noise level and class. Index `num_classes` is the null class used for classifier-free guidance dropout
    (Ho & Salimans 2022); `class_labels=None` means every sample is null.
    """

    def __init__(self, noise_embedding: str, dim: int, emb_dim: int, num_classes: int = 0, text_dim: int = 0):
        super().__init__()
        if noise_embedding == "fourier":
            self.noise = FourierEmbedding(dim)
        elif noise_embedding == "positional":
            self.noise = PositionalEmbedding(dim)
        else:
            raise ValueError(f"unknown noise embedding {noise_embedding!r} (valid: {', '.join(NOISE_EMBEDDINGS)})")
        self.num_classes = num_classes
        self.label = nn.Embedding(num_classes + 1, dim) if num_classes > 0 else None
        self.pooled = nn.Linear(text_dim, dim) if text_dim > 0 else None  # the prompt's pooled text embedding
        self.linear1 = nn.Linear(dim, emb_dim)
        self.linear2 = nn.Linear(emb_dim, emb_dim)

    def forward(self, c_noise: Tensor, class_labels: Tensor | None = None, pooled: Tensor | None = None) -> Tensor:
        emb = self.noise(c_noise).to(self.linear1.weight.dtype)
        if self.label is not None:
            if class_labels is None:
                class_labels = torch.full((c_noise.shape[0],), self.num_classes, device=c_noise.device)
            emb = emb + self.label(class_labels)
        if self.pooled is not None and pooled is not None:
            emb = emb + self.pooled(pooled.to(emb.dtype))
        return F.silu(self.linear2(F.silu(self.linear1(emb))))

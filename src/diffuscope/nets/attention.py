"""Cross-attention from image positions to text tokens (Rombach et al. 2022, Sec. 3.3: softmax(Q K^T / sqrt(d)) V
with Q from the image features and K, V from the token embeddings), residual, zero-initialised output."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from diffuscope.nets.layers import group_norm, zero_init


class CrossAttention(nn.Module):
    def __init__(self, channels: int, context_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None = None) -> Tensor:
        """x [B, C, H, W]; context [B, L, D]; mask [B, L] bool (True = a real token; padding is ignored)."""
        B, C, H, W = x.shape
        heads, d = self.num_heads, C // self.num_heads
        q = self.q(self.norm(x)).reshape(B, heads, d, H * W).transpose(-1, -2)  # [B, heads, HW, d]
        k, v = self.kv(context.to(x.dtype)).reshape(B, -1, 2, heads, d).permute(2, 0, 3, 1, 4)  # [B, heads, L, d]
        attn_mask = None if mask is None else mask[:, None, None, :].to(x.device)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))

"""A compact U-Net for pixel-space diffusion.

The layout is the ADM U-Net (Dhariwal & Nichol 2021) as re-implemented in EDM's `DhariwalUNet` / `SongUNet`
(Karras et al. 2022), kept small and plain for CPU training:

    conv_in -> encoder [ResBlock (+attention)] x num_res_blocks per level, stride-2 conv between levels
            -> middle ResBlock (+attention) ResBlock
            -> decoder [concat skip, ResBlock (+attention)] x (num_res_blocks + 1) per level, upsample between
            -> GroupNorm, SiLU, conv_out (zero-initialised)

Every ResBlock is conditioned on the noise level (and class) by adaptive GroupNorm. The last conv of every
residual branch, every attention output projection and conv_out start at zero (Ho et al. 2020; Karras et al.
2022), so the untrained network outputs exactly 0 and training starts stable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffuscope.checks.errors import UsageError, choices_error, quote
from diffuscope.core.conditioning import ClassCond, TextCond
from diffuscope.nets.attention import CrossAttention
from diffuscope.nets.embeddings import NOISE_EMBEDDINGS, ConditionEmbedding
from diffuscope.nets.layers import group_norm, zero_init

MAX_IN_CHANNELS = 16  # 1 grey, 3 RGB, 4 an SD-style latent (the autoencoder's latent channels)
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 64


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 1  # 1 (grey), 3 (RGB) or a latent's channels (e.g. 4); the output has the same channels
    image_size: int = 28  # square images, 8..64, divisible by 2 ** (len(channel_mult) - 1)
    base_channels: int = 32  # channels at full resolution; level i has base_channels * channel_mult[i]
    channel_mult: tuple[int, ...] = (1, 2, 2)  # one entry per resolution level: 28 -> 14 -> 7 for three
    num_res_blocks: int = 2  # residual blocks per level in the encoder (the decoder has one more)
    attention_resolutions: tuple[int, ...] = ()  # feature-map sizes that get self-attention, e.g. (7,)
    num_heads: int = 1  # attention heads; must divide the channels of every attention level
    dropout: float = 0.0  # dropout inside residual blocks (Ho et al. 2020 used 0.1 on CIFAR-10)
    num_classes: int = 0  # 0 = unconditional; else labels 0..num_classes-1 and the null label num_classes
    text_dim: int = 0  # width of text token embeddings (0 = no text): cross-attention at attention_resolutions
    noise_embedding: str = "fourier"  # "fourier" (EDM, continuous c_noise) or "positional" (DDPM timesteps)


def feature_sizes(config: UNetConfig) -> list[int]:
    """Feature-map size at each level, e.g. [28, 14, 7]."""
    return [config.image_size // 2**i for i in range(len(config.channel_mult))]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_config(config: UNetConfig) -> None:
    """Raise UsageError, naming the problem and the valid choices, if no U-Net can be built from `config`."""
    c = config
    if not _is_int(c.in_channels) or not 1 <= c.in_channels <= MAX_IN_CHANNELS:
        raise UsageError(f"in_channels must be an integer in 1..{MAX_IN_CHANNELS} (1 grey, 3 RGB, 4 a latent), "
                         f"got {quote(c.in_channels)}")
    mult = tuple(c.channel_mult)
    if not mult or not all(_is_int(m) and m >= 1 for m in mult):
        raise UsageError(f"channel_mult must be a non-empty list of positive integers, got {quote(c.channel_mult)}")
    factor = 2 ** (len(mult) - 1)
    valid_sizes = [s for s in range(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE + 1) if s % factor == 0]
    if not valid_sizes:
        raise UsageError(
            f"channel_mult has {len(mult)} levels, too many for images of {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} "
            f"pixels (valid: at most {MAX_IMAGE_SIZE.bit_length()} levels)"
        )
    if not _is_int(c.image_size) or c.image_size not in valid_sizes:
        raise UsageError(
            f"image_size {c.image_size!r} is unsupported with {len(mult)} levels: it must be between "
            f"{MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} and divisible by 2 ** (len(channel_mult) - 1) = {factor} "
            f"(valid: {', '.join(map(str, valid_sizes))})"
        )
    if not _is_int(c.base_channels) or c.base_channels < 8 or c.base_channels % 4:
        raise UsageError(f"base_channels must be a multiple of 4, >= 8 (e.g. 16, 32, 64, 128), got "
                         f"{quote(c.base_channels)}")
    if not _is_int(c.num_res_blocks) or c.num_res_blocks < 1:
        raise UsageError(f"num_res_blocks must be an integer >= 1, got {quote(c.num_res_blocks)}")
    sizes = feature_sizes(c)
    for r in c.attention_resolutions:
        if r not in sizes:
            raise UsageError(
                f"attention resolution {r!r} is not a feature-map size of this U-Net "
                f"(valid: {', '.join(map(str, sizes))})"
            )
    if not _is_int(c.num_heads) or c.num_heads < 1:
        raise UsageError(f"num_heads must be an integer >= 1, got {quote(c.num_heads)}")
    for size, m in zip(sizes, mult):
        ch = c.base_channels * m
        if size in c.attention_resolutions and ch % c.num_heads:
            raise UsageError(
                f"num_heads {c.num_heads} does not divide the {ch} channels at resolution {size} "
                f"(valid: a divisor of {ch})"
            )
    if not 0.0 <= c.dropout < 1.0:
        raise UsageError(f"dropout must be in [0, 1), got {quote(c.dropout)}")
    if not _is_int(c.num_classes) or c.num_classes < 0:
        raise UsageError(f"num_classes must be an integer >= 0 (0 = unconditional), got {quote(c.num_classes)}")
    if not _is_int(c.text_dim) or c.text_dim < 0:
        raise UsageError(f"text_dim must be an integer >= 0 (0 = no text), got {quote(c.text_dim)}")
    if c.text_dim and c.num_classes:
        raise UsageError("a U-Net takes class labels (num_classes) or text (text_dim), not both")
    if c.noise_embedding not in NOISE_EMBEDDINGS:
        raise choices_error("noise embedding", c.noise_embedding, NOISE_EMBEDDINGS)


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in module.parameters())


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, then adaptive GroupNorm `norm(h) * (1 + scale) + shift`, scale and shift from the
    embedding ("AdaGN", Dhariwal & Nichol 2021, Sec. 3), SiLU, dropout, zero-initialised conv; plus a skip."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.affine = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm2(h), scale + 1))
        h = self.conv2(self.dropout(h))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions, residual, zero-initialised output projection
    (Ho et al. 2020 at 16x16; Dhariwal & Nichol 2021 at several resolutions)."""

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.num_heads, C // self.num_heads, H * W)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each [B, heads, H*W, C/heads]
        h = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))


class Block(nn.Module):
    """A ResBlock, followed by self-attention when this resolution is listed in `attention_resolutions`, and then
    cross-attention to the text tokens for a text model (``text_dim`` > 0)."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, attention: bool, num_heads: int,
                 text_dim: int = 0):
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_dim, dropout)
        self.attn = SelfAttention(out_ch, num_heads) if attention else None
        self.cross = CrossAttention(out_ch, text_dim, num_heads) if attention and text_dim else None

    def forward(self, x: Tensor, emb: Tensor, context: TextCond | None = None) -> Tensor:
        h = self.res(x, emb)
        if self.attn is not None:
            h = self.attn(h)
        if self.cross is not None and context is not None:
            h = self.cross(h, context.tokens, context.mask)
        return h


class Downsample(nn.Module):
    """Stride-2 3x3 conv (Ho et al. 2020)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None, context: TextCond | None = None) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then 3x3 conv (Ho et al. 2020)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """The raw network F(c_in * x, c_noise, cond); a preconditioning wrapper turns it into a denoiser."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        check_config(config)
        self.config = config
        c = config
        emb_dim = 4 * c.base_channels  # as in ADM and EDM: noise features of width C, MLP of width 4C
        self.embed = ConditionEmbedding(c.noise_embedding, c.base_channels, emb_dim, c.num_classes, c.text_dim)
        self.conv_in = nn.Conv2d(c.in_channels, c.base_channels, 3, padding=1)

        def block(in_ch: int, out_ch: int, size: int, attention: bool = True) -> Block:
            attention = attention and size in c.attention_resolutions
            return Block(in_ch, out_ch, emb_dim, c.dropout, attention, c.num_heads, c.text_dim)

        sizes = feature_sizes(c)
        last = len(sizes) - 1
        ch = c.base_channels
        skip_channels = [ch]
        self.encoder = nn.ModuleList()
        for level, (size, mult) in enumerate(zip(sizes, c.channel_mult)):
            for _ in range(c.num_res_blocks):
                self.encoder.append(block(ch, c.base_channels * mult, size))
                ch = c.base_channels * mult
                skip_channels.append(ch)
            if level < last:
                self.encoder.append(Downsample(ch))
                skip_channels.append(ch)

        self.middle = nn.ModuleList([block(ch, ch, sizes[-1]), block(ch, ch, sizes[-1], attention=False)])

        self.decoder = nn.ModuleList()
        for level in reversed(range(len(sizes))):
            for _ in range(c.num_res_blocks + 1):
                out_ch = c.base_channels * c.channel_mult[level]
                self.decoder.append(block(ch + skip_channels.pop(), out_ch, sizes[level]))
                ch = out_ch
            if level > 0:
                self.decoder.append(Upsample(ch))

        self.norm_out = group_norm(ch)
        self.conv_out = zero_init(nn.Conv2d(ch, c.in_channels, 3, padding=1))

    def forward(self, x: Tensor, c_noise: Tensor, cond: ClassCond | TextCond | Tensor | None = None) -> Tensor:
        """x [B, C, H, W]; c_noise [B] float, the preconditioned noise level (a 0-d tensor means the whole
        batch); cond: ``ClassCond`` (or its int64 labels [B] in 0..num_classes, num_classes = null) for a class
        model, ``TextCond`` for a text model, None = the null condition (no text). Returns [B, C, H, W]."""
        c = self.config
        expected = (c.in_channels, c.image_size, c.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise UsageError(f"UNet expects images of shape [B, {', '.join(map(str, expected))}], got {list(x.shape)}")
        if c_noise.ndim == 0:
            c_noise = c_noise.expand(x.shape[0])
        if c_noise.shape != (x.shape[0],):
            raise UsageError(f"c_noise must have shape [B] = [{x.shape[0]}], got {list(c_noise.shape)}")
        class_labels, text = self._split_cond(cond, x.shape[0])
        emb = self.embed(c_noise, class_labels, None if text is None else text.pooled)
        h = self.conv_in(x)
        skips = [h]
        for layer in self.encoder:
            h = layer(h, emb, text)
            skips.append(h)
        for layer in self.middle:
            h = layer(h, emb, text)
        for layer in self.decoder:
            if isinstance(layer, Upsample):
                h = layer(h)
            else:
                h = layer(torch.cat([h, skips.pop()], dim=1), emb, text)
        return self.conv_out(F.silu(self.norm_out(h)))

    def _split_cond(self, cond, batch: int) -> tuple[Tensor | None, TextCond | None]:
        """(class labels, text) from what the denoiser passes; a condition of the wrong kind is refused."""
        c = self.config
        if cond is None:
            return None, None
        if isinstance(cond, TextCond):
            if not c.text_dim:
                raise UsageError("a text condition given to a U-Net without text (text_dim = 0)")
            if len(cond) != batch or cond.tokens.shape[-1] != c.text_dim:
                raise UsageError(f"text condition must be [B={batch}, L, {c.text_dim}], got "
                                 f"{list(cond.tokens.shape)}")
            return None, cond
        labels = cond.labels if isinstance(cond, ClassCond) else cond
        if c.num_classes == 0:
            raise UsageError("class labels given to an unconditional U-Net (num_classes = 0); pass None")
        if labels.shape != (batch,):
            raise UsageError(f"class labels must have shape [B] = [{batch}], got {list(labels.shape)}")
        return labels, None

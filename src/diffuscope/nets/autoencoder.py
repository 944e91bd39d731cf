"""A KL-regularised convolutional autoencoder (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
Diffusion Models", Sec. 3.1 and App. G), small enough to train on a laptop CPU.

    encoder: conv_in -> per level: ResBlocks, then a stride-2 conv (all levels but the last) -> mid ResBlock
             -> GroupNorm, SiLU, conv to 2 * latent_channels (the posterior's mean and log-variance)
    decoder: conv_in -> mid ResBlock -> per level (reversed): ResBlocks, then nearest x2 + conv -> GroupNorm, SiLU,
             conv_out to pixels

The posterior is a diagonal Gaussian N(mean, exp(logvar)); training samples from it and adds a small KL penalty
towards N(0, I) (LDM's weight 1e-6), which keeps the latent scale bounded without forcing it to unit variance. The
latent side is ``image_size / 2 ** (len(channel_mult) - 1)``. No attention and no adversarial loss: at 32x32 the
receptive field of two levels already covers most of an emoji, and the L1 loss alone reaches the PSNR bar
(docs/benchmarks.md, "Autoencoder").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from diffuscope.checks.errors import UsageError
from diffuscope.nets.layers import group_norm


@dataclass(frozen=True)
class AutoencoderConfig:
    image_size: int = 32
    in_channels: int = 3
    latent_channels: int = 4
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2)  # one level per entry; each level but the last halves the side
    # ResBlocks per level (encoder; the decoder mirrors it). None at full resolution by default: convolutions there
    # cost 4x more per channel than one level down, and the latent level does the work (docs/benchmarks.md).
    num_res_blocks: tuple[int, ...] = (0, 2)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.downsample

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.latent_channels, self.latent_size, self.latent_size)


MAX_LATENT_CHANNELS = 64


def check_autoencoder_config(c: AutoencoderConfig, *, count: bool = True) -> None:
    """Bound every size of an autoencoder config (docs/limits.md), then, with ``count``, its parameter count on
    torch's meta device and the memory of its weights: refused before anything is allocated."""
    from diffuscope.checks import limits

    if not 1 <= len(c.channel_mult) <= 8 or any(not isinstance(m, int) or not 1 <= m <= limits.MAX_CHANNEL_MULT
                                                for m in c.channel_mult):
        raise UsageError(f"autoencoder channel_mult must be 1..8 integers in 1..{limits.MAX_CHANNEL_MULT}, got "
                         f"{str(c.channel_mult)[:80]}")
    if len(c.num_res_blocks) != len(c.channel_mult) or any(
            not isinstance(n, int) or not 0 <= n <= limits.MAX_RES_BLOCKS for n in c.num_res_blocks):
        raise UsageError(f"autoencoder num_res_blocks needs one count in 0..{limits.MAX_RES_BLOCKS} per level of "
                         f"channel_mult {c.channel_mult}, got {str(c.num_res_blocks)[:80]}")
    for name, lo, hi in (("image_size", limits.MIN_IMAGE_SIZE, limits.MAX_IMAGE_SIZE), ("in_channels", 1, 4),
                         ("latent_channels", 1, MAX_LATENT_CHANNELS), ("base_channels", 1, limits.MAX_BASE_CHANNELS)):
        value = getattr(c, name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise UsageError(f"autoencoder {name} must be an integer, got {str(value)[:80]!r}")
        limits.check_range(f"autoencoder {name}", value, lo, hi)
    if count:
        with torch.device("meta"):
            n = sum(p.numel() for p in Autoencoder(c).parameters())
        if n > limits.MAX_PARAMETERS:
            raise UsageError(f"the autoencoder would have {n:,} parameters, more than the limit of "
                             f"{limits.MAX_PARAMETERS:,}")
        limits.check_memory(f"an autoencoder of {n:,} parameters (weights, EMA, gradients, Adam)", 5 * 4 * n)
    if c.image_size % c.downsample:
        raise UsageError(f"image size {c.image_size} is not divisible by the autoencoder's downsampling "
                         f"{c.downsample} (channel_mult {c.channel_mult})")


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with a skip (1x1 conv when the width changes), as in LDM's autoencoder."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = group_norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = self.conv2(self.act(self.norm2(h)))
        return self.skip(x) + h


class Encoder(nn.Module):
    def __init__(self, c: AutoencoderConfig):
        super().__init__()
        widths = [c.base_channels * m for m in c.channel_mult]
        self.conv_in = nn.Conv2d(c.in_channels, widths[0], 3, padding=1)
        layers: list[nn.Module] = []
        ch = widths[0]
        for i, w in enumerate(widths):
            for _ in range(c.num_res_blocks[i]):
                layers.append(ResBlock(ch, w))
                ch = w
            if i < len(widths) - 1:  # the stride-2 conv widens to the next level's channels
                layers.append(nn.Conv2d(ch, widths[i + 1], 3, stride=2, padding=1))
                ch = widths[i + 1]
        self.down = nn.Sequential(*layers)
        self.mid = ResBlock(ch, ch)
        self.norm_out, self.act = group_norm(ch), nn.SiLU()
        self.conv_out = nn.Conv2d(ch, 2 * c.latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.mid(self.down(self.conv_in(x)))
        return self.conv_out(self.act(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, c: AutoencoderConfig):
        super().__init__()
        widths = [c.base_channels * m for m in c.channel_mult]
        ch = widths[-1]
        self.conv_in = nn.Conv2d(c.latent_channels, ch, 3, padding=1)
        self.mid = ResBlock(ch, ch)
        layers: list[nn.Module] = []
        for i in reversed(range(len(widths))):
            for _ in range(c.num_res_blocks[i]):
                layers.append(ResBlock(ch, widths[i]))
                ch = widths[i]
            if i > 0:  # the conv after upsampling narrows to the next level's channels
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, widths[i - 1], 3, padding=1)]
                ch = widths[i - 1]
        self.up = nn.Sequential(*layers)
        self.norm_out, self.act = group_norm(ch), nn.SiLU()
        self.conv_out = nn.Conv2d(ch, c.in_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.up(self.mid(self.conv_in(z)))
        return self.conv_out(self.act(self.norm_out(h)))


class Autoencoder(nn.Module):
    """``encode`` -> (mean, logvar) of the posterior; ``decode`` latents -> pixels (unclamped)."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        check_autoencoder_config(config, count=False)  # the sizes; callers bound the parameter count first
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)  # LDM's clamp: exp() stays finite

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Reconstruction from a posterior sample (the reparametrisation trick), and the posterior (mean, logvar)."""
        mean, logvar = self.encode(x)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
        z = mean + torch.exp(0.5 * logvar) * noise
        return self.decode(z), mean, logvar


def kl_divergence(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over latent dimensions: [B]."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)

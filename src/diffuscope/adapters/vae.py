"""A diffusers ``AutoencoderKL`` as a latent model's codec, and a cheap linear latent-to-RGB preview.

Latents are scaled as Stable Diffusion trains on them (Rombach et al. 2022, Sec. 4.3.2 and Appendix G): the sampler
integrates z * ``scaling_factor`` (0.18215 for SD 1.x/2.x), so the scaled latents have about unit variance; decoding
divides by it first. A ``shift_factor`` (None for SD 1.x/2.x) is subtracted before scaling, as diffusers does.

``encode`` takes the mean of the encoder's diagonal Gaussian q(z | x) (deterministic: the same image gives the same
latents, which a forward strip and a reconstruction check need), not a sample.

The preview is the linear map that the popular UIs apply to latents instead of decoding them (AUTOMATIC1111's
"Approx cheap", ComfyUI's latent_rgb_factors): RGB = W z + b per latent pixel. Rather than ship factors for one
VAE, it is fitted to *this* VAE by least squares on decoded random latents (``fit_latent_rgb``), so it works for any
latent channel count; docs/diffusers.md records how close it comes to the real decode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class VAECodec:
    """Pixels in [-1, 1] <-> scaled latents through a frozen ``AutoencoderKL`` (in eval mode, no gradients).

    ``image_shape`` / ``latent_shape`` are (C, H, W) for the pipeline's default size; ``factor`` is the spatial
    down-sampling (2^(number of blocks - 1): 8 for Stable Diffusion)."""

    def __init__(self, vae: nn.Module, image_shape: tuple[int, int, int], latent_shape: tuple[int, int, int]):
        self.vae = vae
        self.image_shape = tuple(image_shape)
        self.latent_shape = tuple(latent_shape)
        config = vae.config
        self.scaling_factor = float(config.scaling_factor)
        self.shift_factor = float(getattr(config, "shift_factor", None) or 0.0)
        self.factor = 2 ** (len(config.block_out_channels) - 1)
        self._preview: tuple[Tensor, Tensor] | None = None

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """[B, 3, H, W] pixels in [-1, 1] -> [B, C, H/f, W/f] scaled latents (float32): the posterior mean."""
        z = self.vae.encode(images.to(self.device, self.dtype)).latent_dist.mean
        return ((z.float() - self.shift_factor) * self.scaling_factor).to(images.device)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Scaled latents -> pixels in about [-1, 1] (float32, not clipped), as StableDiffusionPipeline decodes."""
        z = latents.float() / self.scaling_factor + self.shift_factor
        x = self.vae.decode(z.to(self.device, self.dtype), return_dict=False)[0]
        return x.float().to(latents.device)

    def preview(self, latents: Tensor, *, upscale: bool = True) -> Tensor:
        """The cheap linear preview of scaled latents: pixels in [-1, 1] at latent resolution (``upscale``: nearest
        up-sampled to the image size). The map is fitted on first use (one small decode, see ``fit_latent_rgb``)."""
        if self._preview is None:
            self._preview = fit_latent_rgb(self.decode, self.latent_shape[0], self.factor)
        weight, bias = self._preview
        rgb = torch.einsum("oc,bchw->bohw", weight.to(latents.device), latents.float())
        rgb = (rgb + bias.to(latents.device).reshape(1, -1, 1, 1)).clamp(-1, 1)
        return F.interpolate(rgb, scale_factor=self.factor, mode="nearest") if upscale else rgb


@torch.no_grad()
def fit_latent_rgb(decode, channels: int, factor: int, *, n: int = 8, size: int = 8,
                   seed: int = 0) -> tuple[Tensor, Tensor]:
    """Least-squares W [3, C], b [3] with RGB ~= W z + b, where RGB is the decode of n random N(0, I) scaled latents
    of size x size, average-pooled to latent resolution (f x f pixels per latent pixel). One decode of a batch of n
    small latents: ~fractions of a second even for Stable Diffusion's VAE on a CPU."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, channels, size, size, generator=g)
    rgb = F.avg_pool2d(decode(z).float().cpu(), factor)
    inputs = torch.cat([z.permute(0, 2, 3, 1).reshape(-1, channels), torch.ones(n * size * size, 1)], 1)
    targets = rgb.permute(0, 2, 3, 1).reshape(-1, rgb.shape[1])
    solution = torch.linalg.lstsq(inputs.double(), targets.double()).solution.float()  # [C + 1, 3]
    return solution[:channels].T.contiguous(), solution[channels]

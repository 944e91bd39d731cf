"""Training in an autoencoder's latent space (Rombach et al. 2022): the data set is encoded once by the frozen
autoencoder (posterior means times the scale factor, so the latents have about unit variance) and the diffusion
model learns those latents; the codec is saved into every checkpoint, so the model decodes its own samples."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from diffuscope.checks.errors import UsageError
from diffuscope.data import ImageDataset
from diffuscope.nets.codec import CODEC_FILES, AutoencoderCodec, load_codec, load_embedded_codec

ENCODE_BATCH = 256


def open_autoencoder(path: str | Path, data: ImageDataset, resume_from: Path | None = None,
                     device: str | torch.device = "cpu") -> AutoencoderCodec:
    """The codec to train in: the one a resumed checkpoint carries (so a resumed run cannot switch autoencoders),
    else the autoencoder run/checkpoint ``path``. Its image shape must be the data's."""
    if resume_from is not None and all((Path(resume_from) / n).is_file() for n in CODEC_FILES):
        codec = load_embedded_codec(resume_from, device=device)
    else:
        codec = load_codec(path, device=device)
    shape = (data.channels, data.image_size, data.image_size)
    if tuple(codec.image_shape) != shape:
        c, h, w = codec.image_shape
        raise UsageError(f"the autoencoder {path} takes {c}x{h}x{w} images but the data are "
                         f"{shape[0]}x{shape[1]}x{shape[2]}: pass --image-size {h} or another autoencoder")
    return codec


@torch.no_grad()
def encode_images(codec: AutoencoderCodec, images: Tensor, batch: int = ENCODE_BATCH) -> Tensor:
    """All images -> their scaled latents (deterministic posterior means), in batches."""
    return torch.cat([codec.encode(images[i:i + batch]) for i in range(0, len(images), batch)])

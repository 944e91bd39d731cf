"""What the emoji autoencoder keeps: held-out PSNR, and the retrieval ceiling of its reconstructions (issue 18).

A latent model can only draw what its decoder can: the reconstructions' pixel-space retrieval among all emoji is
the ceiling of the latent model's prompt faithfulness, beside the real images' own ceiling. Also the colour
histogram distance (total variation) of reconstructions vs the real images, and the real-vs-real one (two halves).

    python bench/bench_emoji_autoencoder.py runs/emoji-ae
"""

from __future__ import annotations

import argparse

import torch

from diffuscope.data import load_dataset
from diffuscope.metrics.retrieval import RetrievalGallery, histogram_distance, retrieval_ceiling
from diffuscope.nets.codec import load_codec
from diffuscope.training.autoencoder import AutoencoderRunConfig, psnr, split_images
from diffuscope.training.config import DataConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("autoencoder", help="run folder, checkpoint folder or export")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    codec = load_codec(args.autoencoder)
    size = codec.image_shape[-1]
    real = load_dataset("emoji", split="all", image_size=size)
    recon = torch.cat([codec.decode(codec.encode(x)) for x in real.images.split(256)])
    _, heldout = split_images(AutoencoderRunConfig(DataConfig(name="emoji", image_size=size)))
    held_rec = torch.cat([codec.decode(codec.encode(x)) for x in heldout.split(256)])
    gallery = RetrievalGallery(real.images, real.class_names)
    ceiling, rec = retrieval_ceiling(gallery), retrieval_ceiling(gallery, recon)
    half = len(real) // 2
    print(f"autoencoder {codec.path}: latents {'x'.join(map(str, codec.latent_shape))}, "
          f"scale factor {codec.scale_factor:.5f}")
    print(f"held-out PSNR {psnr(held_rec, heldout).mean():.2f} dB on {len(heldout)} images; "
          f"all emoji {psnr(recon, real.images).mean():.2f} dB")
    print(f"retrieval among {len(real)} emoji (16x16 pixels): real top-1 {ceiling.top1:.2%} top-5 {ceiling.top5:.2%}; "
          f"reconstructions top-1 {rec.top1:.2%} top-5 {rec.top5:.2%}")
    print(f"colour histogram TV: reconstructions vs real {histogram_distance(recon, real.images):.4f}; "
          f"real halves {histogram_distance(real.images[:half], real.images[half:]):.4f}")


if __name__ == "__main__":
    main()

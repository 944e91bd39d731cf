"""Tiny randomly initialised diffusers pipelines written with ``save_pretrained``, built from configs (no hub):
a Stable-Diffusion-layout text-to-image pipeline (CLIP text encoder and tokenizer from a vocabulary and merges
written here, AutoencoderKL, UNet2DConditionModel with cross-attention) and a class-conditional DDPM pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = ("a", "photo", "of", "the", "red", "blue", "green", "cat", "dog", "circle", "heart")
MAX_TOKENS = 12


def clip_tokenizer(folder: Path):
    """A CLIPTokenizer over ``WORDS`` (whole words and single characters, no merges beyond them)."""
    from transformers import CLIPTokenizer

    chars = sorted(set("".join(WORDS)))
    tokens = [*chars, *(c + "</w>" for c in chars), *(w + "</w>" for w in WORDS)]
    vocab = {t: i for i, t in enumerate(["<|startoftext|>", "<|endoftext|>", *dict.fromkeys(tokens)])}
    merges = ["#version: 0.2"]
    for w in WORDS:  # merge each word left to right: "c a" -> "ca", "ca t</w>" -> "cat</w>"
        parts = [*w[:-1], w[-1] + "</w>"]
        while len(parts) > 1:
            merged = parts[0] + parts[1]
            merges.append(f"{parts[0]} {parts[1]}")
            vocab.setdefault(merged, len(vocab))
            parts = [merged, *parts[2:]]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("\n".join(dict.fromkeys(merges)) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=MAX_TOKENS)


def save_text_pipeline(folder: Path, scheduler=None) -> Path:
    """A tiny StableDiffusionPipeline (latents 4x8x8, images 3x16x16, CLIP width 32) saved in ``folder``."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tokenizer = clip_tokenizer(folder.parent / f"{folder.name}-vocab")
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=4, sample_size=16,
    )
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=4,
    )
    scheduler = scheduler or diffusers.DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, set_alpha_to_one=True,
        steps_offset=1,
    )
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def save_ddpm_pipeline(folder: Path, num_classes: int = 0, scheduler=None) -> Path:
    """A tiny DDPMPipeline (UNet2DModel, 3x8x8 pixels), class-conditional when ``num_classes``; ``scheduler`` replaces
    its DDPMScheduler (any diffusers scheduler: the folder's config then names it)."""
    import diffusers

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        num_class_embeds=num_classes or None,
    )
    scheduler = scheduler or diffusers.DDPMScheduler(clip_sample=False)
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    return folder


def load_pipeline(folder: Path):
    """diffusers' own pipeline for ``folder`` (offline, no progress bar): the parity oracle."""
    import diffusers

    pipe = diffusers.DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe

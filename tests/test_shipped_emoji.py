"""The shipped text-to-image latent model (`--model emoji`): loads offline with the autoencoder it carries, follows
the recipe of configs/emoji.toml, draws the prompted emoji. The slow test checks the bars of issue 18
(docs/benchmarks.md, "The shipped emoji model")."""

import json
from pathlib import Path

import pytest
import torch

from diffuscope.io.checkpoint import builtin_models
from diffuscope.metrics.evaluation import Evaluator
from diffuscope.models.load import load_model

pytestmark = pytest.mark.skipif("emoji" not in builtin_models(), reason="the shipped emoji model is not installed")
ROOT = Path(__file__).resolve().parents[1]


def test_shipped_emoji_model_is_a_text_latent_model_within_30_mb():
    model = load_model("emoji")
    assert model.is_latent and model.conditioner.kind == "text"
    assert model.sample_shape == (4, 16, 16) and model.image_shape == (3, 32, 32)
    files = json.loads((model.path / "manifest.json").read_text())["files"]
    assert {"autoencoder.safetensors", "autoencoder.json", "ema.safetensors"} <= set(files)
    assert sum(f.stat().st_size for f in model.path.iterdir()) <= 30 * 2**20


def test_shipped_config_is_what_the_documented_recipe_writes():
    from diffuscope.training import config as run_config

    model = load_model("emoji")
    recipe = run_config.resolve("emoji", ROOT / "configs" / "emoji.toml", {}).model
    assert model.config.unet.base_channels == recipe.unet.base_channels
    assert model.config.unet.attention_resolutions == recipe.unet.attention_resolutions
    assert model.config.schedule == recipe.schedule and model.config.sigma_data == recipe.sigma_data
    assert model.config.text_encoder == recipe.text_encoder
    assert model.run_config["train"]["max_steps"] == run_config.resolve("emoji", ROOT / "configs" / "emoji.toml",
                                                                         {}).train.max_steps


def test_shipped_emoji_model_draws_the_prompted_emoji():
    from diffuscope.generation.generate import GenerationRequest, generate

    model = load_model("emoji")
    judge = Evaluator.for_model(model).classifier
    prompts = ["red heart", "palm tree", "crying cat", "red apple"]
    gen = generate(model, GenerationRequest(prompts=tuple(prompts), steps=20, guidance=1.25))
    assert gen.images.shape == (4, 3, 32, 32)
    found = [judge.class_names[i] for i in judge.predict(gen.images.clamp(-1, 1))]
    assert sum(f == p for f, p in zip(found, prompts)) >= 3, found


@pytest.mark.slow
def test_shipped_emoji_model_meets_the_bars():
    """Issue 18: on 200 training prompts x 8 seeds at the defaults, retrieval top-5 >= 90% and top-1 >= 75%."""
    from diffuscope.data import load_dataset
    from diffuscope.data.emoji import emoji_prompts
    from diffuscope.generation.generate import GenerationRequest, generate
    from diffuscope.metrics.retrieval import RetrievalGallery

    model = load_model("emoji")
    train = emoji_prompts("train")
    prompts = list(train[:: len(train) // 200][:200])
    real = load_dataset("emoji", split="all")
    gallery = RetrievalGallery(real.images, real.class_names)
    gen = generate(model, GenerationRequest(prompts=tuple(prompts * 8), guidance=1.25, steps=20, batch_size=200))
    result = gallery.score(gen.images.clamp(-1, 1), prompts * 8)
    assert result.top5 >= 0.90 and result.top1 >= 0.75, (result.top1, result.top5)
    assert torch.isfinite(gen.images).all()

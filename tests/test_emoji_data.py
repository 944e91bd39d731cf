"""The built-in emoji data set: which emoji, their prompts, the held-out prompt set, the images."""

from __future__ import annotations

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.data import load_dataset
from diffuscope.data.emoji import (
    HELD_OUT_PROMPTS,
    emoji_index,
    emoji_prompts,
    is_base,
    load_emoji,
    prompt_of,
)


def test_base_emoji_only_with_unique_cldr_names():
    index = emoji_index()
    names = [n for n, _ in index]
    assert len(names) == 1656  # 1,661 base files, 5 of them unnamed by the emoji package
    assert len({n.casefold() for n in names}) == len(names)
    assert "red heart" in names and "crying cat" in names and "palm tree" in names
    assert "Japan" not in names and "flag Japan" not in names  # no country flags
    stems = {p.stem for _, p in index}
    assert "2764-fe0f" in stems or "2764" in stems  # red heart found with or without the U+FE0F selector


def test_skin_tones_and_flags_are_not_base():
    assert is_base((0x2764,))
    assert not is_base((0x1F44D, 0x1F3FB))  # thumbs up, light skin tone
    assert not is_base((0x1F1EF, 0x1F1F5))  # flag: Japan
    assert not is_base((0x1F3F4, 0xE0067, 0xE0062, 0xE0065, 0xE006E, 0xE0067, 0xE007F))  # England
    assert prompt_of(":red_heart:") == "red heart"


def test_held_out_prompts_are_the_test_split_and_their_words_occur_in_training():
    train, test = emoji_prompts("train"), emoji_prompts("test")
    assert sorted(p.casefold() for p in test) == sorted(p.casefold() for p in HELD_OUT_PROMPTS)
    assert not set(train) & set(test)
    assert len(train) + len(test) == len(emoji_prompts("all"))
    words = {w for p in train for w in p.casefold().split()}
    for prompt in HELD_OUT_PROMPTS:
        assert set(prompt.split()) <= words, prompt
    # the colour-binding pair stays in training
    assert "red heart" in train and "green heart" in train


def test_test_split_images():
    ds = load_dataset("emoji", split="test")
    assert ds.name == "emoji" and len(ds) == len(HELD_OUT_PROMPTS) and ds.channels == 3 and ds.image_size == 32
    assert ds.labels.tolist() == list(range(len(ds)))
    assert ds.images.min() >= -1 and ds.images.max() <= 1
    heart = ds.images[ds.class_names.index("blue heart")]
    assert torch.allclose(heart[:, 0, 0], torch.ones(3))  # composited on white
    r, g, b = heart[:, 12:20, 12:20].mean((1, 2))
    assert b > r + 0.5 and b > g  # blue in the middle


def test_subset_size_and_channels():
    ds = load_emoji("all", 64, None, prompts=("red heart", "palm tree"))
    assert ds.images.shape == (2, 3, 64, 64) and ds.class_names == ("red heart", "palm tree")
    r, g, b = ds.images[0, :, 24:40, 24:40].mean((1, 2))
    assert r > g + 0.5 and r > b + 0.5
    with pytest.raises(UsageError, match="colour"):
        load_emoji("all", None, 1, prompts=("red heart",))
    with pytest.raises(UsageError, match="unknown emoji"):
        load_emoji("all", None, None, prompts=("not an emoji",))

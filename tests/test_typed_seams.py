"""Issue 28, part 5: typed seams and no hidden state -- a bounded prompt cache, a text-encoder registry resolved at
first use (nothing registers itself on import), the ``Denoiser`` protocol and the judges' ``Judge`` protocol."""

from __future__ import annotations

import subprocess
import sys

import torch

from diffuscope.core.conditioning import TEXT_ENCODERS, TextConditioner, make_conditioner, text_encoder_factory


def counting_encoder(calls: list):
    def encode(prompts):
        calls.extend(prompts)
        rows = [torch.full((2, 4), float(sum(map(ord, p)) % 97)) for p in prompts]
        tokens = torch.stack(rows)
        return tokens, torch.ones(len(prompts), 2, dtype=torch.bool), tokens.mean(1)

    return encode


def test_prompt_cache_never_exceeds_its_bound_and_gives_identical_encodings():
    calls: list[str] = []
    conditioner = TextConditioner(counting_encoder(calls), "toy", cache_size=3)
    first = conditioner.encode(["red cat"])
    for i in range(20):
        conditioner.encode([f"prompt {i}"])
        assert len(conditioner._cache) <= 3
    again = conditioner.encode(["red cat"])  # evicted: encoded again, to the same tensors
    assert calls.count("red cat") == 2
    torch.testing.assert_close(again.tokens, first.tokens, rtol=0, atol=0)
    torch.testing.assert_close(again.pooled, first.pooled, rtol=0, atol=0)
    conditioner.encode(["red cat"])  # recently used: cached
    assert calls.count("red cat") == 2


def test_least_recently_used_prompt_goes_first():
    calls: list[str] = []
    conditioner = TextConditioner(counting_encoder(calls), "toy", cache_size=2)
    conditioner.encode(["a"])
    conditioner.encode(["b"])
    conditioner.encode(["a"])  # a is now the most recent: c evicts b
    conditioner.encode(["c"])
    conditioner.encode(["a"])
    assert calls == ["a", "b", "c"]


def test_text_encoder_registry_is_resolved_at_first_use_not_filled_on_import():
    before = dict(TEXT_ENCODERS)
    import diffuscope.text

    assert before == TEXT_ENCODERS  # importing the encoders' package registers nothing
    assert isinstance(TEXT_ENCODERS["all-MiniLM-L6-v2"], str)  # "module:factory", imported when first named
    assert text_encoder_factory("all-MiniLM-L6-v2") is diffuscope.text.minilm_conditioner
    code = ("import sys; from diffuscope.core.conditioning import make_conditioner; "
            "c = make_conditioner({'kind': 'text', 'encoder': 'all-MiniLM-L6-v2'}); "
            "print(c.name, 'tokenizers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["all-MiniLM-L6-v2", "False"]  # named, built, and still nothing heavy imported


def test_unknown_text_encoder_is_a_usage_error_naming_the_valid_ones():
    import pytest

    from diffuscope.checks.errors import UsageError

    with pytest.raises(UsageError, match="all-MiniLM-L6-v2"):
        make_conditioner({"kind": "text", "encoder": "nope"})

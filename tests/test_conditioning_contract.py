"""core/conditioning.py at its edges: the condition batch for n images, class labels, the encoder registry and the
saved config, each refusal's exact line (a fake text encoder: milliseconds)."""

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.core import conditioning as c
from diffuscope.core.conditioning import (
    ClassCond,
    ClassConditioner,
    NoConditioner,
    TextConditioner,
    cond_rows,
    make_conditioner,
    register_text_encoder,
    text_encoder_factory,
)

DIGITS = ClassConditioner(tuple("0123456789"))


def _encoder(prompts):
    """A fake text encoder: the prompt's length as its token values."""
    n = len(prompts[0])
    return torch.full((1, 3, 2), float(n)), torch.tensor([[True, n > 0, False]]), torch.full((1, 2), float(n))


def test_conditions_repeat_the_prompts_over_n_images():
    assert DIGITS.conditions(["3", "7"], 5).labels.tolist() == [3, 7, 3, 7, 3]
    assert DIGITS.conditions(["3", "7"]).labels.tolist() == [3, 7]  # n=None: one image per prompt
    assert DIGITS.conditions(("seven",), 2).labels.tolist() == [7, 7]
    assert DIGITS.conditions(None, 3).labels.tolist() == [10, 10, 10]  # unconditional: the null class
    with pytest.raises(UsageError) as e:
        DIGITS.conditions([], 3)
    assert str(e.value) == "give at least one prompt (a class name: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)"
    for n in (None, 0):
        with pytest.raises(UsageError) as e:
            DIGITS.conditions(None, n)
        assert str(e.value) == "an unconditional generation needs the number of images n >= 1"
    none = NoConditioner()
    assert none.conditions(None, 2) is None and none.conditions([], 1) is None
    with pytest.raises(UsageError) as e:
        none.conditions(["cat"], 1)
    assert str(e.value) == "this model is unconditional: leave out the prompt (got 'cat')"
    assert none.check("  ") is None and none.describe() == "no prompt (an unconditional model)"


def test_text_conditions_encode_each_prompt_once():
    calls = []

    def counting(prompts):
        calls.append(prompts[0])
        return _encoder(prompts)

    text = TextConditioner(counting, "fake")
    cond = text.conditions(["ab", "abcd"], 3)
    assert cond.pooled[:, 0].tolist() == [2.0, 4.0, 2.0] and calls == ["ab", "abcd"]
    assert text.conditions(None, 2).pooled[:, 0].tolist() == [0.0, 0.0] and calls[-1] == ""
    assert text.check("  a   red  cat ") == "a red cat"
    assert text.to_config() == {"kind": "text", "encoder": "fake"} and text.describe() == "any text (encoder fake)"


def test_class_labels_are_checked_and_named():
    assert DIGITS.labels([0, 9]).labels.tolist() == [0, 9] and DIGITS.labels([]).labels.tolist() == []
    assert DIGITS.labels(torch.tensor([[1], [2]])).labels.tolist() == [1, 2]
    for bad in ([10], [-1], [3, 10]):
        with pytest.raises(UsageError) as e:
            DIGITS.labels(bad)
        assert str(e.value) == "class labels must be in 0..9"
    assert DIGITS.null(2).labels.tolist() == [10, 10] and DIGITS.num_classes == 10
    assert DIGITS.check("Seven") == "7" and DIGITS.encode(["1", "2"]).labels.dtype == torch.long
    with pytest.raises(UsageError) as e:
        DIGITS.check(" ")
    assert str(e.value) == "--prompt is required for this model (a class name: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)"
    many = ClassConditioner([f"c{i}" for i in range(31)])
    assert many.describe() == "a class name: " + ", ".join(f"c{i}" for i in range(30)) + ", ..."
    with pytest.raises(UsageError) as e:
        ClassConditioner(())
    assert str(e.value) == "a class-conditional model needs at least one class name"


def test_configs_round_trip_and_unknown_kinds_are_refused(monkeypatch):
    assert make_conditioner({"kind": "none"}).kind == "none"
    assert make_conditioner(DIGITS.to_config()).class_names == DIGITS.class_names
    assert DIGITS.to_config() == {"kind": "class", "class_names": list("0123456789")}
    assert NoConditioner().to_config() == {"kind": "none"}
    with pytest.raises(UsageError) as e:
        make_conditioner({"kind": "audio"})
    assert str(e.value) == "unknown conditioning 'audio' (valid: none, class, text)"
    monkeypatch.setattr(c, "TEXT_ENCODERS", dict(c.TEXT_ENCODERS))
    register_text_encoder("fake", lambda: TextConditioner(_encoder, "fake"))
    made = make_conditioner({"kind": "text", "encoder": "fake"})
    assert isinstance(made, TextConditioner) and made.name == "fake"
    register_text_encoder("by-path", "diffuscope.core.conditioning:NoConditioner")  # imported at first use
    assert text_encoder_factory("by-path") is NoConditioner
    with pytest.raises(UsageError) as e:
        text_encoder_factory("nope")
    assert str(e.value) == "unknown text encoder 'nope' (valid: all-MiniLM-L6-v2, by-path, fake)"
    monkeypatch.setattr(c, "TEXT_ENCODERS", {})
    with pytest.raises(UsageError) as e:
        make_conditioner({"kind": "text"})
    assert str(e.value) == "unknown text encoder '' (valid: none)"


def test_cond_rows_and_long_prompts_quoted_short():
    assert cond_rows(None, 3) is None
    assert cond_rows(ClassCond(torch.tensor([4])), 3).labels.tolist() == [4, 4, 4]
    with pytest.raises(UsageError) as e:
        NoConditioner().check("x" * 100)
    assert str(e.value) == f"this model is unconditional: leave out the prompt (got {'x' * 80 + '...'!r})"
    with pytest.raises(UsageError) as e:
        NoConditioner().check("y" * 80)
    assert str(e.value).endswith(f"(got {'y' * 80!r})")


def _tc(n, length=3):
    return c.TextCond(torch.arange(n * length * 2, dtype=torch.float32).reshape(n, length, 2),
                      torch.ones(n, length, dtype=torch.bool), torch.arange(n * 2, dtype=torch.float32).reshape(n, 2))


def test_cond_rows_by_int_index_move_and_repeat():
    three = ClassCond(torch.tensor([3, 1, 4]))
    assert [three[i].labels.tolist() for i in (0, 1, 2, -1, -2, -3)] == [[3], [1], [4], [4], [1], [3]]
    assert three.to("cpu").labels.tolist() == [3, 1, 4]
    text = _tc(2)
    twice = text.repeat_interleave(2)
    assert twice.tokens.shape == (4, 3, 2) and torch.equal(twice.tokens[1], text.tokens[0])
    assert torch.equal(twice.pooled[2], text.pooled[1])
    assert torch.equal(c.Cond.cat([text]).tokens, text.tokens)
    with pytest.raises(TypeError) as e:
        c.Cond.cat([three, text])
    assert str(e.value) == "cannot concatenate conditions of different kinds"
    with pytest.raises(ValueError) as e:
        three.expand(2)
    assert str(e.value) == "cannot expand a condition batch of 3 to 2"


def test_text_prompts_cache_keeps_the_most_recent_and_checks_tokens():
    calls = []

    def counting(prompts):
        calls.append(prompts[0])
        return _encoder(prompts)

    text = TextConditioner(counting, "fake", cache_size=2)
    for p in ("a", "bb", "a", "ccc", "a", "bb"):
        text.encode([p])
    assert calls == ["a", "bb", "ccc", "bb"]  # "a" stayed (used again), "bb" was dropped for "ccc"
    assert list(text._cache) == ["a", "bb"]
    with pytest.raises(UsageError) as e:
        text.check(None)
    assert str(e.value) == "--prompt is required for this model (any text (encoder fake))"
    counted = TextConditioner(_encoder, "fake", max_tokens=3, count_tokens=lambda s: len(s.split()))
    assert counted.check("a b c") == "a b c"
    with pytest.raises(UsageError) as e:
        counted.check("a b c d")
    assert str(e.value) == "prompt 'a b c d' is 4 tokens long; this model's text encoder takes at most 3"
    assert TextConditioner(_encoder, "fake", count_tokens=lambda s: 99).check("x y") == "x y"  # no limit set


def test_thirty_classes_are_all_named_and_a_class_config_needs_names():
    thirty = ClassConditioner([f"c{i}" for i in range(30)])
    assert thirty.describe() == "a class name: " + ", ".join(f"c{i}" for i in range(30))
    with pytest.raises(UsageError) as e:
        make_conditioner({"kind": "class"})
    assert str(e.value) == "a class-conditional model needs at least one class name"

"""Typed conditions batch and slice themselves; conditioners turn prompts into them in one place."""

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.core.conditioning import (
    ClassCond,
    ClassConditioner,
    Cond,
    NoConditioner,
    TextCond,
    TextConditioner,
    as_cond,
    make_conditioner,
)


def _text(n, length, value=1.0):
    mask = torch.ones(n, length, dtype=torch.bool)
    return TextCond(torch.full((n, length, 2), value), mask, torch.full((n, 2), value))


def test_class_cond_slices_expands_cats_and_drops_rows():
    c = ClassCond(torch.tensor([3, 1, 4]))
    assert len(c) == 3 and c[1:].labels.tolist() == [1, 4] and c[0].labels.tolist() == [3]
    assert Cond.cat([c, ClassCond(torch.tensor([5]))]).labels.tolist() == [3, 1, 4, 5]
    assert c.where(torch.tensor([False, True, False]), ClassCond(torch.tensor([9]))).labels.tolist() == [3, 9, 4]
    assert ClassCond(torch.tensor([7])).expand(3).labels.tolist() == [7, 7, 7]
    assert c.repeat_interleave(2).labels.tolist() == [3, 3, 1, 1, 4, 4]
    with pytest.raises(ValueError):
        c.expand(5)
    with pytest.raises(TypeError):
        Cond.cat([c, _text(1, 2)])


def test_text_conds_of_different_lengths_pad_with_masked_tokens():
    short, long = _text(1, 3, 1.0), _text(2, 5, 2.0)
    both = Cond.cat([short, long])
    assert both.tokens.shape == (3, 5, 2) and both.mask.sum(1).tolist() == [3, 5, 5]
    assert float(both.tokens[0, 3:].abs().sum()) == 0  # the padding is zero and masked out
    dropped = long.where(torch.tensor([True, False]), short)
    assert dropped.mask.sum(1).tolist() == [3, 5] and torch.equal(dropped.pooled[0], short.pooled[0])


def test_as_cond_wraps_int_labels_and_refuses_floats():
    assert as_cond([1, 2]).labels.dtype == torch.long and as_cond(None) is None
    assert as_cond(ClassCond(torch.tensor([1]))).labels.tolist() == [1]
    with pytest.raises(TypeError):
        as_cond(torch.tensor([0.5]))


def test_conditioners_check_encode_and_null():
    classes = ClassConditioner(("0", "1", "7"))
    assert classes.encode(["seven", " 1 "]).labels.tolist() == [2, 1] and classes.null(2).labels.tolist() == [3, 3]
    with pytest.raises(UsageError, match="unknown prompt"):
        classes.encode(["8"])
    with pytest.raises(UsageError, match="prompt is required"):
        classes.check(None)
    none = NoConditioner()
    assert none.encode([None, ""]) is None and none.null(3) is None and not none.has_null
    with pytest.raises(UsageError, match="unconditional"):
        none.check("x" * 500)
    calls = []

    def encoder(prompts):
        calls.append(list(prompts))
        n = len(prompts[0].split()) or 1
        return torch.ones(1, n, 2), torch.ones(1, n, dtype=torch.bool), torch.ones(1, 2)

    text = TextConditioner(encoder, "toy", max_tokens=3, count_tokens=lambda t: len(t.split()))
    cond = text.encode(["red  heart", "red heart", "a b c"])
    assert cond.tokens.shape == (3, 3, 2) and calls == [["red heart"], ["a b c"]]  # cached per prompt
    with pytest.raises(UsageError, match="at most 3"):
        text.check("one two three four")
    with pytest.raises(UsageError, match="prompt is required"):
        text.check("   ")
    assert len(text.null(4)) == 4 and calls[-1] == [""]


def test_make_conditioner_round_trips_and_refuses_unknown_kinds():
    assert make_conditioner(ClassConditioner(("a", "b")).to_config()).class_names == ("a", "b")
    assert make_conditioner({"kind": "none"}).kind == "none"
    with pytest.raises(UsageError, match="conditioning"):
        make_conditioner({"kind": "pictures"})
    with pytest.raises(UsageError, match="text encoder"):
        make_conditioner({"kind": "text", "encoder": "no-such-encoder"})

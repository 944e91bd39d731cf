"""The offline all-MiniLM-L6-v2 text encoder and its registration as a text conditioner."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.core.conditioning import TextCond, make_conditioner
from diffuscope.text.minilm import MAX_TOKENS, PAD_TO, MiniLM

# sentence-transformers 6.2.0 (transformers 5.24.0) on the same wheel, SentenceTransformer(model_dir()).encode(...):
# the first 6 of 384 values of the (normalised) pooled output, measured once (docs/benchmarks.md, "MiniLM")
REFERENCE = {
    "red heart": [-0.0337481, -0.008057, -0.0386634, 0.0730613, -0.007184, 0.0298758],
    "crying cat": [0.0099239, 0.0373395, 0.0680261, 0.0471557, -0.0328881, 0.0120184],
}


@pytest.fixture(scope="module")
def encoder() -> MiniLM:
    return MiniLM.load()


def test_pooled_output_matches_sentence_transformers(encoder):
    assert encoder.tokenize(["red heart"])[0][0, :4].tolist() == [101, 2417, 2540, 102]  # [CLS] red heart [SEP]
    _, _, pooled = encoder(list(REFERENCE))
    for row, values in zip(pooled, REFERENCE.values()):
        assert torch.allclose(row[:6], torch.tensor(values), atol=1e-6)
    assert torch.allclose(pooled.norm(dim=1), torch.ones(2), atol=1e-6)


def test_shapes_padding_and_batch_independence(encoder):
    tokens, mask, pooled = encoder(["red heart", "", "crying cat"])
    assert tokens.shape == (3, PAD_TO, 384) and mask.shape == (3, PAD_TO) and mask.dtype == torch.bool
    assert pooled.shape == (3, 384)
    assert mask.sum(1).tolist() == [4, 2, 4]  # the empty prompt is [CLS] [SEP]
    assert (tokens[~mask] == 0).all()  # padding rows zeroed
    alone = encoder(["red heart"])
    assert torch.equal(alone[0][0], tokens[0]) and torch.equal(alone[2][0], pooled[0])
    long = " ".join(["red"] * 20)
    t, m, _ = encoder([long, "red heart"])
    assert t.shape[1] == 22 and m.sum(1).tolist() == [22, 4]  # longer than 16 tokens: L grows
    assert torch.allclose(t[1, :PAD_TO], tokens[0], atol=1e-5)


def test_prompt_over_the_limit_is_refused(encoder):
    with pytest.raises(UsageError, match=f"at most {MAX_TOKENS}"):
        encoder(["word " * MAX_TOKENS])


def test_registered_conditioner():
    cond = make_conditioner({"kind": "text", "encoder": "all-MiniLM-L6-v2"})
    assert cond.kind == "text" and cond.to_config() == {"kind": "text", "encoder": "all-MiniLM-L6-v2"}
    c = cond.encode(["red heart", "blue heart"])
    assert isinstance(c, TextCond) and c.tokens.shape == (2, PAD_TO, 384)
    cos = torch.nn.functional.cosine_similarity(c.pooled[0], c.pooled[1], dim=0)
    assert 0.7 < cos < 0.85  # pooled vectors barely separate colours (ANCHORS.md: 0.77)
    null = cond.null(3)
    assert len(null) == 3 and null.mask.sum(1).tolist() == [2, 2, 2]
    with pytest.raises(UsageError, match="tokens long"):
        cond.check("word " * 300)
    with pytest.raises(UsageError, match="prompt is required"):
        cond.check("  ")


def test_import_stays_light():
    code = ("import sys, diffuscope, diffuscope.text, diffuscope.core.conditioning; "
            "print('tokenizers' in sys.modules, 'safetensors.torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False"

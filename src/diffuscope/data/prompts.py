"""Prompts of a class-conditional model: class names, case-insensitive, surrounding whitespace ignored.

A class named with a single digit "0".."9" also answers to the English word: "7", "seven" and " Seven " -> the
class "7".
"""

from __future__ import annotations

from collections.abc import Sequence

from diffuscope.checks.errors import UsageError, quote

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MAX_LISTED = 30


def normalize(prompt: str) -> str:
    """Trimmed, inner whitespace collapsed to single spaces, case-folded."""
    return " ".join(str(prompt).split()).casefold()


def class_aliases(class_names: Sequence[str]) -> dict[str, int]:
    """Every accepted (normalized) prompt -> class index: the names, plus digit words for classes "0".."9"."""
    aliases: dict[str, int] = {}
    for i, name in enumerate(class_names):
        key = normalize(name)
        if not key:
            raise UsageError(f"class {i} has an empty name: it cannot be prompted")
        if key in aliases:
            raise UsageError(f"class names {quote(class_names[aliases[key]])} and {quote(name)} are the same prompt "
                             "(prompts ignore case and surrounding whitespace)")
        aliases[key] = i
    for i, name in enumerate(class_names):
        key = normalize(name)
        if len(key) == 1 and key in "0123456789":
            aliases.setdefault(DIGIT_WORDS[int(key)], i)
    return aliases


def class_index(prompt: str, class_names: Sequence[str]) -> int:
    """The class a prompt names; an unknown prompt raises UsageError listing the valid ones."""
    aliases = class_aliases(class_names)
    key = normalize(prompt)
    if key in aliases:
        return aliases[key]
    valid = list(class_names) + [w for w in aliases if w not in {normalize(n) for n in class_names}]
    shown = ", ".join(valid[:MAX_LISTED])
    if len(valid) > MAX_LISTED:
        shown += f", ... ({len(valid) - MAX_LISTED} more)"
    from diffuscope.checks.errors import quote

    raise UsageError(f"unknown prompt {quote(prompt)} (valid: {shown})")

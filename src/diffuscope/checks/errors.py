"""The one error type for bad user input (the CLI prints it on one line and exits with code 2), and how user text
is quoted in an error line so that it stays one line."""

from __future__ import annotations

import re
from typing import Any

QUOTE_CHARS = 80
MAX_ERROR_CHARS = 400  # a whole error line, the last safety net (cli main)


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """``repr`` of user text, cut to ``limit`` characters with the full length said: error lines stay one line."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return repr(text) if isinstance(value, str) else text
    shown = repr(text[:limit]) if isinstance(value, str) else text[:limit]
    return f"{shown}... ({len(text):,} characters)"


# C0 and C1 control characters (ESC, CSI, BEL, ...) and the Unicode line/paragraph separators and bidi controls:
# what a terminal would act on instead of showing.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control character shown escaped (``\\x1b``) instead of acted on by the terminal: text
    read from files or argv (a PNG's parameters, a prompt) is printed through this. ``keep_newlines`` keeps
    ``\\n`` as a line break (multi-line text such as a PNG's ``parameters``)."""
    def escape(m: re.Match) -> str:
        c = m.group()
        if keep_newlines and c == "\n":
            return c
        return c.encode("unicode_escape").decode("ascii")

    text = str(text)
    # surrogate-escaped bytes (undecodable argv or file names) are shown as \udcff instead of failing to print
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return _CONTROL.sub(escape, text)


def one_line(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """A message as one line of at most ``limit`` characters, control characters escaped."""
    text = printable(" ".join(str(message).split("\n")))
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"




class UsageError(ValueError):
    """Bad input from a user (a flag, a file, a config key). The message names the problem and the valid choices."""


def choices_error(what: str, value: object, valid) -> UsageError:
    """`unknown sampler 'foo' (valid: a, b, c)`."""
    valid = [str(v) for v in valid]
    shown = ", ".join(valid[:30]) + (f", ... ({len(valid)} in all)" if len(valid) > 30 else "")
    return UsageError(f"unknown {what} {quote(value)} (valid: {shown})")

"""One validation layer for what is read from disk or the command line.

Everything a user or a file supplies (flags, TOML/JSON configs, run configs, checkpoint manifests and configs,
PNG parameter chunks) is checked here, before other code sees it: wrong types and values outside the documented
ranges are one-line ``UsageError``s naming the file, the field and the valid range, quoting user text at most
``QUOTE_CHARS`` characters. Config dataclasses are checked field by field against ``RANGES`` (by class and field
name, so this module imports no config class and everything may import it).
"""

from __future__ import annotations

import dataclasses
import math
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffuscope.checks import limits
from diffuscope.checks.errors import UsageError, quote


class NonFiniteError(RuntimeError):
    """Numbers went NaN/inf (weights, a denoiser's output): the CLI stops in one line with exit 1."""


# --- names and numbers from the command line ---------------------------------------------------------------------


def name(text: str, what: str = "name") -> str:
    """A non-empty, non-blank name of at most MAX_PROMPT_CHARS characters, stripped: never a silent default."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"{what} must not be empty or blank, got {quote(text)}")
    if len(text) > limits.MAX_PROMPT_CHARS:
        raise UsageError(f"{what} is longer than {limits.MAX_PROMPT_CHARS} characters: {quote(text)}")
    return text.strip()


def prompt(text: Any, what: str = "prompt") -> str:
    """A prompt, decoded and checked once before any model, file or terminal sees it: a string of valid UTF-8 (an
    undecodable command-line byte arrives as a lone surrogate, ``\\udcff``, and is refused), no control characters
    (newlines, tabs, ESC sequences), at most MAX_PROMPT_CHARS characters, not blank. Every command that takes a
    prompt, and the web layer, call this; returns it stripped."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{what} is not valid UTF-8: {quote(text)}") from None
    if not isinstance(text, str):
        raise UsageError(f"{what} must be text, got {quote(text)}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{what} is not valid UTF-8 (undecodable bytes): {quote(text)}") from None
    if len(text) > limits.MAX_PROMPT_CHARS:
        raise UsageError(f"{what} is longer than {limits.MAX_PROMPT_CHARS} characters: {quote(text)}")
    if not text.strip():
        raise UsageError(f"{what} must not be empty or blank, got {quote(text)}")
    bad = next((c for c in text if unicodedata.category(c) in ("Cc", "Cs") or c in "\u2028\u2029"), None)
    if bad is not None:
        raise UsageError(f"{what} contains the control character {bad!r}: use printable text, {quote(text)}")
    return text.strip()


def distinct(values: Any, what: str, most: int) -> tuple[str, ...]:
    """The values of a repeatable flag (``what``, e.g. "--model"): one to ``most`` of them, none given twice."""
    values = tuple(values or ())
    if not values:
        raise UsageError(f"give at least one {what}")
    if len(values) > most:
        raise UsageError(f"{what} is given {len(values)} times: at most {most}")
    twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if twice is not None:
        raise UsageError(f"{what} {quote(twice)} is given twice: give each one once (at most {most})")
    return values


def integer(text: str, what: str, lo: int, hi: int) -> int:
    """A decimal integer in lo..hi (no floats like 1e9, no underscores or signs games beyond int())."""
    kind = "a positive integer" if lo == 1 else "an integer >= 0" if lo == 0 else "an integer"
    valid = f"{what} must be {kind} in {lo}..{hi}".lstrip()
    try:
        value = int(str(text).strip())
    except ValueError:
        raise UsageError(f"{valid}, got {quote(text)}") from None
    if not lo <= value <= hi:
        raise UsageError(f"{valid}, got {quote(text)}")
    return value


def number(text: str, what: str, lo: float, hi: float, *, lo_open: bool = False) -> float:
    """A finite float in [lo, hi] (or (lo, hi] with ``lo_open``): no NaN, no inf, no 1e300."""
    try:
        value = float(str(text).strip())
    except ValueError:
        value = math.nan
    inside = (lo < value if lo_open else lo <= value) and value <= hi
    if not (math.isfinite(value) and inside):
        bracket = "(" if lo_open else "["
        kind = "a number >= 0" if lo == 0 and not lo_open else "a positive number" if lo == 0 else "a number"
        raise UsageError(f"{what} must be {kind}, finite, in {bracket}{lo:g}, {hi:g}], got {quote(text)}".lstrip())
    return value


def interval(value: Any, what: str = "guidance interval") -> tuple[float, float]:
    """(LO, HI) noise levels, 0 <= LO < HI, HI finite or inf: from 'LO,HI' text or a 2-element JSON list."""
    valid = f"{what} must be two noise levels LO,HI with 0 <= LO < HI (HI may be inf), e.g. 0.28,5.42"
    if isinstance(value, str):
        parts = value.split(",")
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        raise UsageError(f"{valid}, got {quote(value)}")
    if len(parts) != 2 or any(isinstance(p, bool) or not isinstance(p, str | int | float) for p in parts):
        raise UsageError(f"{valid}, got {quote(value)}")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise UsageError(f"{valid}, got {quote(value)}") from None
    if not (math.isfinite(lo) and 0 <= lo < hi and not math.isnan(hi)):
        raise UsageError(f"{valid}, got {quote(value)}")
    return lo, hi


# --- config dataclasses: ranges by (class, field) ------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False
    length: tuple[int, int] | None = None  # for tuples: allowed number of entries

    def contains(self, v: float) -> bool:
        above = self.lo < v if self.lo_open else self.lo <= v
        below = v < self.hi if self.hi_open else v <= self.hi
        return above and below

    def text(self) -> str:
        return f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


L = limits
BIG = 10_000_000  # step counts of a training run
RANGES: dict[str, dict[str, Range]] = {
    "TrainConfig": {
        "max_steps": Range(1, BIG), "batch_size": Range(1, L.MAX_BATCH_SIZE), "lr": Range(0, 1, lo_open=True),
        "warmup_steps": Range(0, BIG), "lr_min_ratio": Range(0, 1), "weight_decay": Range(0, 10),
        "adam_betas": Range(0, 1, hi_open=True, length=(2, 2)), "grad_clip": Range(0, 1e6),
        "ema_decay": Range(0, 1, hi_open=True), "cond_dropout": Range(0, 1, hi_open=True),
        "min_snr_gamma": Range(0, 1e3, lo_open=True), "p_mean": Range(-10, 10), "p_std": Range(0, 10, lo_open=True),
        "seed": Range(0, 2**32 - 1), "checkpoint_every": Range(0, BIG), "keep_checkpoints": Range(0, BIG),
        "max_bad_batches": Range(0, BIG), "sample_every": Range(0, BIG), "sample_steps": Range(1, L.MAX_STEPS),
        "sample_guidance": Range(0, L.MAX_GUIDANCE), "log_every": Range(0, BIG), "threads": Range(0, 1024),
    },
    "AutoencoderTrainConfig": {
        "max_steps": Range(1, BIG), "batch_size": Range(1, L.MAX_BATCH_SIZE), "lr": Range(0, 1, lo_open=True),
        "warmup_steps": Range(0, BIG), "lr_min_ratio": Range(0, 1), "kl_weight": Range(0, 1e3),
        "ema_decay": Range(0, 1, hi_open=True), "grad_clip": Range(0, 1e6), "seed": Range(0, 2**32 - 1),
        "val_fraction": Range(0, 1, lo_open=True, hi_open=True), "eval_every": Range(0, BIG),
        "checkpoint_every": Range(0, BIG), "keep_checkpoints": Range(0, BIG), "log_every": Range(0, BIG),
        "threads": Range(0, 1024),
    },
    "DataConfig": {"image_size": Range(L.MIN_IMAGE_SIZE, L.MAX_IMAGE_SIZE), "channels": Range(1, 3)},
    "ModelConfig": {"sigma_data": Range(0, 100, lo_open=True),
                    "class_names": Range(0, 0, length=(0, L.MAX_NUM_CLASSES))},
    "ScheduleConfig": {"num_timesteps": Range(1, L.MAX_TIMESTEPS),
                       "beta_start": Range(0, 1, lo_open=True, hi_open=True),
                       "beta_end": Range(0, 1, lo_open=True, hi_open=True),
                       "sigma_min": Range(0, 1e4, lo_open=True), "sigma_max": Range(0, 1e6, lo_open=True)},
    "UNetConfig": {"in_channels": Range(1, 16), "image_size": Range(L.MIN_IMAGE_SIZE, L.MAX_IMAGE_SIZE),
                   "base_channels": Range(1, L.MAX_BASE_CHANNELS),
                   "channel_mult": Range(1, L.MAX_CHANNEL_MULT, length=(1, 8)),
                   "num_res_blocks": Range(1, L.MAX_RES_BLOCKS),
                   "attention_resolutions": Range(1, L.MAX_IMAGE_SIZE, length=(0, 8)),
                   "num_heads": Range(1, L.MAX_HEADS), "dropout": Range(0, 1, hi_open=True),
                   "num_classes": Range(0, L.MAX_NUM_CLASSES)},
}


def check_value(where: str, value: Any, rng: Range) -> None:
    values = value if isinstance(value, tuple) else (value,)
    if isinstance(value, tuple) and rng.length is not None:
        lo, hi = rng.length
        if not lo <= len(value) <= hi:
            count = f"{lo}" if lo == hi else f"{lo}..{hi}"
            raise UsageError(f"config {where} must have {count} entries, got {len(value)}")
    for v in values:
        if v is None or isinstance(v, str):  # optional fields; names are checked by their owners
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise UsageError(f"config {where} must be a finite number in {rng.text()}, got {v}")
        if not rng.contains(v):
            raise UsageError(f"config {where} = {quote(v)} is outside the valid range {rng.text()}")


def check_ranges(obj: Any, where: str = "", *, recursive: bool = True) -> None:
    """Check every field of a (nested) config dataclass against RANGES; floats must be finite everywhere."""
    table = RANGES.get(type(obj).__name__, {})
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        sub = f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(value):
            if recursive:
                check_ranges(value, sub)
        elif f.name in table:
            check_value(sub, value, table[f.name])
        elif isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"config {sub} must be a finite number, got {value}")


@contextmanager
def in_file(path: str | Path) -> Iterator[None]:
    """Prefix the one-line UsageErrors raised inside with the file they are about."""
    try:
        yield
    except UsageError as e:
        text = str(e)
        raise UsageError(text if str(path) in text else f"{path}: {text}") from None


# --- JSON documents: typed access ----------------------------------------------------------------------------------


def expect(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    """``value`` if it is of ``kind`` (bools are not numbers), else one line naming the file and field."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    bad_bool = isinstance(value, bool) and bool not in kinds
    if bad_bool or not isinstance(value, kinds):
        names = " or ".join({dict: "an object", list: "a list", str: "a string", int: "an integer",
                             float: "a number", bool: "true/false", type(None): "null"}.get(k, k.__name__)
                            for k in kinds)
        raise UsageError(f"{where}: {what} must be {names}, got {quote(value)}")
    return value


def finite_number(value: Any, where: str, what: str, lo: float, hi: float) -> float:
    expect(value, (int, float), where, what)
    if not (math.isfinite(value) and lo <= value <= hi):
        raise UsageError(f"{where}: {what} must be a finite number in [{lo:g}, {hi:g}], got {quote(value)}")
    return float(value)


def int_in(value: Any, where: str, what: str, lo: int, hi: int) -> int:
    expect(value, int, where, what)
    if not lo <= value <= hi:
        raise UsageError(f"{where}: {what} must be an integer in {lo}..{hi}, got {quote(value)}")
    return value


# --- checkpoint manifests ------------------------------------------------------------------------------------------

_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")  # a plain name inside the checkpoint folder
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str | None  # None only in a format-1 manifest (sizes only)


@dataclass(frozen=True)
class Manifest:
    format: int
    step: int
    files: dict[str, FileEntry]
    source: str | None = None


def parse_manifest(raw: Any, where: str) -> Manifest:
    """A manifest.json document: {"format": 1|2, "step": int >= 0, "files": {name: size | {"size", "sha256"}}}."""
    expect(raw, dict, where, "the manifest")
    fmt = int_in(raw.get("format"), where, "format", 1, 2)
    step = int_in(raw.get("step", 0), where, "step", 0, 2**62)
    files = expect(raw.get("files"), dict, where, "files")
    source = raw.get("source")
    if source is not None:
        expect(source, str, where, "source")
    entries = {}
    for fname, entry in files.items():
        if not _FILE_NAME.match(fname):
            raise UsageError(f"{where}: file name {quote(fname)} is not a plain name inside the checkpoint folder")
        if fmt == 1:
            entries[fname] = FileEntry(int_in(entry, where, f"files[{fname}]", 0, 2**50), None)
            continue
        expect(entry, dict, where, f"files[{fname}]")
        size = int_in(entry.get("size"), where, f"files[{fname}].size", 0, 2**50)
        digest = expect(entry.get("sha256"), str, where, f"files[{fname}].sha256")
        if not _SHA256.match(digest):
            raise UsageError(f"{where}: files[{fname}].sha256 must be 64 lowercase hex digits, got {quote(digest)}")
        entries[fname] = FileEntry(size, digest)
    return Manifest(fmt, step, entries, source)


# --- PNG parameter chunks ------------------------------------------------------------------------------------------

_PNG_STR = ("prompt", "negative_prompt", "sampler", "spacing", "model_name", "model_path", "version")


def parse_png_params(raw: Any, where: str, schema_version: int) -> dict[str, Any]:
    """The 'diffuscope' JSON chunk of a PNG, typed: the fields `sample --from` reuses are checked (type and range),
    other keys are kept as they are (they are only displayed)."""
    expect(raw, dict, where, "the 'diffuscope' chunk")
    params = dict(raw)
    int_in(params.get("schema", 0), where, "schema", 0, 2**31)
    if params.get("schema", 0) > schema_version:
        raise UsageError(f"{where} was written by a newer diffuscope (schema {params['schema']})")
    for key in _PNG_STR:
        if params.get(key) is not None:
            expect(params[key], str, where, key)
            if len(params[key]) > limits.MAX_PROMPT_CHARS:
                raise UsageError(f"{where}: {key} is longer than {limits.MAX_PROMPT_CHARS} characters")
    if "steps" in params:
        int_in(params["steps"], where, "steps", 1, limits.MAX_STEPS)
    if "seed" in params:
        int_in(params["seed"], where, "seed", 0, 2**63 - 1)
    if "guidance" in params:
        finite_number(params["guidance"], where, "guidance", 0, limits.MAX_GUIDANCE)
    if params.get("guidance_interval") is not None:
        try:
            params["guidance_interval"] = interval(params["guidance_interval"])
        except UsageError as e:
            raise UsageError(f"{where}: {e}") from None
    for key in ("width", "height", "channels", "nfe"):
        if key in params:
            int_in(params[key], where, key, 0, 2**31)
    for key in ("sampler", "spacing", "prompt"):
        if params.get(key) is not None and not params[key].strip() and key != "prompt":
            raise UsageError(f"{where}: {key} must not be empty")
    for key in ("prompt", "negative_prompt"):  # "" = no prompt; any other text obeys the prompt rule
        if params.get(key):
            try:
                params[key] = prompt(params[key], key)
            except UsageError as e:
                raise UsageError(f"{where}: {e}") from None
    return params


# --- finiteness ----------------------------------------------------------------------------------------------------


def check_finite(tensor, what: str) -> None:
    """Stop in one line when a tensor holds NaN or inf (instead of writing blank images or bad weights)."""
    import torch

    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise NonFiniteError(f"{what}: {bad:,} of {tensor.numel():,} values are NaN or inf")

"""Generation parameters inside PNG files.

Two text chunks (ANCHORS.md, conventions users know):
- ``parameters``: AUTOMATIC1111's text, read by many tools::

      <prompt>
      Negative prompt: <text>          (omitted when empty)
      Steps: 25, Sampler: DPM++ 2M, CFG scale: 2, Seed: 42, Size: 28x28, Model: mnist

  (with ``Guidance interval: 0.28-5.42`` after the CFG scale when guidance is limited to an interval)

  A value containing ``,``, ``:`` or a newline is written with ``json.dumps``.
- ``diffuscope``: JSON with every parameter (sigma grid included) and a schema version, to reproduce the image.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from diffuscope.checks import limits, validate
from diffuscope.checks.errors import UsageError

SCHEMA_VERSION = 1
JSON_KEY = "diffuscope"
A1111_KEY = "parameters"


def _quote(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if any(c in text for c in ",:\n") else text


def _interval_text(interval) -> str | None:
    return None if interval is None else f"{interval[0]:g}-{interval[1]:g}"


def a1111_text(params: dict[str, Any]) -> str:
    """AUTOMATIC1111's ``parameters`` text from our parameter dict."""
    fields = {
        "Steps": params["steps"],
        "Sampler": params["sampler"],
        "Schedule type": params.get("spacing"),
        "CFG scale": f"{params['guidance']:g}",
        "Guidance interval": _interval_text(params.get("guidance_interval")),
        "Seed": params["seed"],
        "Size": f"{params['width']}x{params['height']}",
        "Model": params.get("model_name"),
        "Version": f"diffuscope {params.get('version', '')}".strip(),
    }
    lines = [params["prompt"]]
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in fields.items() if v not in (None, "")))
    return "\n".join(lines)


def parse_a1111(text: str) -> dict[str, str]:
    """Parse the last line of a ``parameters`` text into {key: value} (quoted values unquoted)."""
    *head, last = text.strip().split("\n")
    out: dict[str, str] = {}
    i = 0
    while i < len(last):
        colon = last.find(": ", i)
        if colon < 0:
            break
        key = last[i:colon].strip()
        j = colon + 2
        if j < len(last) and last[j] == '"':
            value, end = json.JSONDecoder().raw_decode(last, j)
        else:
            end = last.find(", ", j)
            end = len(last) if end < 0 else end
            value = last[j:end]
        out[key] = value
        i = end + 2 if end < len(last) else end
    if len(out) < 3:
        raise ValueError("not an AUTOMATIC1111 parameters text (needs at least 3 'key: value' pairs)")
    out["Prompt"] = head[0] if head else ""
    return out


def save_png(image: Image.Image, path: str | Path, params: dict[str, Any]) -> Path:
    """Write a PNG with both chunks; refuses to overwrite an existing file."""
    path = Path(path)
    if path.exists():
        raise UsageError(f"{path} already exists: refusing to overwrite it")
    info = PngImagePlugin.PngInfo()
    info.add_text(A1111_KEY, a1111_text(params))
    info.add_text(JSON_KEY, json.dumps({"schema": SCHEMA_VERSION, **params}, sort_keys=True))
    # Written whole under a temporary name, then linked into place: a full disk leaves no half PNG, and a file
    # that appeared meanwhile is never replaced (os.link fails on an existing name).
    from diffuscope.io.outputs import WriteFailed, default_mode, write_failed

    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".png")
        default_mode(fd)  # an ordinary file's mode, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG", pnginfo=info)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise UsageError(f"{path} already exists: refusing to overwrite it") from None
    except OSError as e:  # a full or read-only disk: one line naming the image (exit 1)
        raise (e if isinstance(e, WriteFailed) else write_failed(e, path)) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return path


def read_png_params(path: str | Path) -> tuple[str | None, dict[str, Any] | None]:
    """(parameters text, diffuscope JSON) of a PNG; either may be None."""
    path = Path(path)
    with limits.open_image(path) as im:  # bounded pixels, file size and text chunks (limits.py)
        text = dict(getattr(im, "text", {}) or {})
    for key in (A1111_KEY, JSON_KEY):
        if key in text and len(text[key]) > limits.MAX_TEXT_CHUNK:
            raise UsageError(f"{path}: its '{key}' chunk has {len(text[key]):,} characters, more than the limit "
                             f"of {limits.MAX_TEXT_CHUNK:,} (diffuscope writes about 2,000)")
    params = None
    if JSON_KEY in text:
        try:
            raw = json.loads(text[JSON_KEY])
        except (json.JSONDecodeError, RecursionError):
            raise UsageError(f"{path} has a corrupt '{JSON_KEY}' chunk (not JSON)") from None
        params = validate.parse_png_params(raw, str(path), SCHEMA_VERSION)
    return text.get(A1111_KEY), params

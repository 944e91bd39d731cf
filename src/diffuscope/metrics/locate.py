"""Where a model's classifier lives: ``RUN_DIR/classifier/`` for a trained run, or inside a shipped checkpoint.

    RUN_DIR/config.json                  the run config ([data] names the data set and image size)
    RUN_DIR/checkpoints/step-NNNNNNN/    the model
    RUN_DIR/classifier/                  classifier.json + classifier.safetensors (``diffuscope classifier``)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diffuscope.checks.errors import UsageError
from diffuscope.metrics.classifier import INFO_FILE


def find_classifier(model_path: str | Path) -> Path | None:
    """The classifier folder for a model, or None. Looked for, in order:

    MODEL_PATH itself (a classifier folder, or a shipped checkpoint folder holding classifier.json),
    MODEL_PATH/classifier, and for a checkpoint RUN_DIR/checkpoints/step-N (or RUN_DIR/checkpoints) the run's
    RUN_DIR/classifier.
    """
    return next((c for c in _candidates(Path(model_path)) if (c / INFO_FILE).is_file()), None)


def _candidates(p: Path) -> list[Path]:
    out = [p, p / "classifier"]
    if p.name == "checkpoints":
        out.append(p.parent / "classifier")
    elif p.parent.name == "checkpoints":
        out.append(p.parent.parent / "classifier")
    return out


def _run_dir(p: Path) -> Path:
    if p.name == "checkpoints":
        return p.parent
    return p.parent.parent if p.parent.name == "checkpoints" else p


def _model_data(p: Path) -> dict[str, Any]:
    """Best effort: the [data] table of the model's run config (for the hint in require_classifier)."""
    for cfg_file, key in ((p / "config.json", "run"), (_run_dir(p) / "config.json", None)):
        try:
            raw = json.loads(cfg_file.read_text())
            data = (raw[key] if key else raw)["data"]
            if isinstance(data, dict) and data.get("name"):
                return data
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            continue
    return {}


def require_classifier(model_path: str | Path) -> Path:
    """find_classifier, or a UsageError naming where it looked and the command that trains one."""
    p = Path(model_path)
    found = find_classifier(p)
    if found is not None:
        return found
    data = _model_data(p)
    size = f" --image-size {data['image_size']}" if data.get("image_size") else ""
    looked = ", ".join(str(c) for c in _candidates(p)[1:])
    raise UsageError(f"no classifier for {p} (looked in {looked}): train one with "
                     f"`diffuscope classifier --data {data.get('name', 'DATA')}{size} "
                     f"--out {_run_dir(p) / 'classifier'}`")

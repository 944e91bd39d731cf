"""Checkpoints: safetensors weights + JSON config, written atomically, loaded strictly.

A checkpoint is a folder ``step-NNNNNNN/`` holding ``model.safetensors``, ``ema.safetensors``, ``config.json``,
``state.pt`` (optimizer, LR schedule, step, RNG states; loaded with ``torch.load(..., weights_only=True)``) and
``manifest.json``, written last: a folder without a manifest is incomplete and never loaded. The folder is built
under a temporary name and renamed into place (ANCHORS.md: reliability practices).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from diffuscope import config as config_io
from diffuscope.errors import UsageError
from diffuscope.model import ModelConfig, build_denoiser
from diffuscope.precond import Denoiser

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
TMP_PREFIX = ".tmp-"


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with path.open("rb+") as f:
        os.fsync(f.fileno())


def write_json_atomic(path: Path, data: Any) -> None:
    """temp file, fsync, os.replace: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX, suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def save_checkpoint(
    run_checkpoints: Path,
    step: int,
    *,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    model_config: ModelConfig,
    run_config: dict[str, Any],
    state: dict[str, Any],
) -> Path:
    """Write ``run_checkpoints/step-NNNNNNN`` atomically and return its path. ``model``/``ema`` are the nets."""
    run_checkpoints = Path(run_checkpoints)
    run_checkpoints.mkdir(parents=True, exist_ok=True)
    final = run_checkpoints / checkpoint_name(step)
    tmp = Path(tempfile.mkdtemp(dir=run_checkpoints, prefix=TMP_PREFIX + checkpoint_name(step) + "-"))
    try:
        save_file(_state_dict(model), str(tmp / "model.safetensors"), metadata={"step": str(step)})
        save_file(_state_dict(ema), str(tmp / "ema.safetensors"), metadata={"step": str(step)})
        (tmp / "config.json").write_text(
            json.dumps({"model": config_io.to_dict(model_config), "run": run_config}, indent=2)
        )
        torch.save(state, tmp / "state.pt")
        files = sorted(p.name for p in tmp.iterdir())
        for name in files:
            _fsync_file(tmp / name)
        manifest = {"format": FORMAT_VERSION, "step": step, "files": {n: (tmp / n).stat().st_size for n in files}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        _fsync_file(tmp / MANIFEST)
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(run_checkpoints)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def clean_stale_temp(run_checkpoints: Path) -> list[Path]:
    """Remove temp folders/files left by a run killed mid-save; return what was removed."""
    removed = []
    if Path(run_checkpoints).is_dir():
        for p in Path(run_checkpoints).iterdir():
            if p.name.startswith(TMP_PREFIX):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def is_complete(ckpt: Path) -> bool:
    return (Path(ckpt) / MANIFEST).is_file()


def list_checkpoints(run_checkpoints: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    folder = Path(run_checkpoints)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-") and is_complete(p)]
    return sorted(found, key=lambda p: p.name)


BUILTIN_MODELS_DIR = Path(__file__).parent / "models"


def builtin_models() -> list[str]:
    """Names of the models shipped inside the package (``--model mnist``)."""
    if not BUILTIN_MODELS_DIR.is_dir():
        return []
    return sorted(p.name for p in BUILTIN_MODELS_DIR.iterdir() if is_complete(p))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, a run folder (its newest complete checkpoint) or a built-in model name."""
    name = str(path)
    path = Path(path)
    if not path.exists() and name in builtin_models():
        return BUILTIN_MODELS_DIR / name
    if not path.exists():
        shipped = ", ".join(builtin_models()) or "none installed"
        raise UsageError(f"model not found: {path} (give a checkpoint folder, a run folder or a built-in "
                         f"model: {shipped})")
    if (path / "config.json").is_file() and (path / "ema.safetensors").is_file():
        if not is_complete(path):
            raise UsageError(f"checkpoint {path} is incomplete: its {MANIFEST} is missing")
        return path
    ckpts = list_checkpoints(path / "checkpoints")
    if ckpts:
        return ckpts[-1]
    raise UsageError(f"{path} is not a model: expected a checkpoint folder (step-NNNNNNN) or a run folder with one")


def read_manifest(ckpt: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((Path(ckpt) / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"checkpoint {ckpt} has an unreadable {MANIFEST}: {e}") from None
    for name, size in manifest.get("files", {}).items():
        f = Path(ckpt) / name
        if not f.is_file() or f.stat().st_size != size:
            raise UsageError(f"checkpoint file {f} is missing or truncated (expected {size} bytes)")
    return manifest


def load_config(ckpt: Path) -> tuple[ModelConfig, dict[str, Any]]:
    try:
        raw = json.loads((Path(ckpt) / "config.json").read_text())
        return config_io.from_dict(ModelConfig, raw["model"], "model"), raw.get("run", {})
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise UsageError(f"checkpoint {ckpt} has an unreadable config.json: {e}") from None


def load_weights(module: torch.nn.Module, file: Path) -> None:
    """Strict safetensors load: a truncated file, a pickle or another architecture is refused in one line."""
    file = Path(file)
    if not file.is_file():
        raise UsageError(f"checkpoint file {file} is missing")
    with file.open("rb") as f:
        head = f.read(2)
    if head[:1] == b"\x80" or head == b"PK":
        raise UsageError(f"{file} is a pickle/zip file, not safetensors: refusing to unpickle it")
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as e:
        raise UsageError(f"{file} is not a valid safetensors file ({str(e).splitlines()[0]})") from None
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise UsageError(
            f"{file} does not match the model config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for k, v in tensors.items():
        if v.shape != expected[k].shape:
            raise UsageError(f"{file} does not match the model config: {k} has shape {tuple(v.shape)}, "
                             f"config expects {tuple(expected[k].shape)}")
    module.load_state_dict(tensors, strict=True)


@dataclass
class LoadedModel:
    denoiser: Denoiser
    config: ModelConfig
    path: Path
    step: int
    run_config: dict[str, Any]

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names


def load_model(path: str | Path, *, ema: bool = True, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model for sampling (EMA weights by default) from a checkpoint or run folder, in eval mode."""
    if (Path(path) / "model_index.json").is_file():  # a diffusers pipeline folder (issue 21)
        from diffuscope.adapters.pipeline import load_pipeline_model

        return load_pipeline_model(path, device=device)
    ckpt = resolve_checkpoint(path)
    manifest = read_manifest(ckpt)
    config, run = load_config(ckpt)
    denoiser = build_denoiser(config)
    load_weights(denoiser.net, ckpt / ("ema.safetensors" if ema else "model.safetensors"))
    denoiser.eval().requires_grad_(False).to(device)
    return LoadedModel(denoiser, config, ckpt, int(manifest.get("step", 0)), run)


def load_training_state(ckpt: Path) -> dict[str, Any]:
    """The optimizer/RNG/step state, with torch.load(weights_only=True): no code can run from it."""
    try:
        return torch.load(Path(ckpt) / "state.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or pickled-object file
        raise UsageError(f"cannot load training state {Path(ckpt) / 'state.pt'}: {str(e).splitlines()[0]}") from None


def export_model(source: str | Path, dest: str | Path, *, classifier: str | Path | None = None) -> Path:
    """An inference-only copy of a checkpoint (EMA weights + config, a fresh manifest), optionally with its metrics
    classifier beside it: the layout of a built-in model (``src/diffuscope/models/NAME``)."""
    ckpt = resolve_checkpoint(source)
    read_manifest(ckpt)
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise UsageError(f"{dest} already exists and is not empty: refusing to overwrite it")
    dest.mkdir(parents=True, exist_ok=True)
    files = ["ema.safetensors", "config.json"]
    for name in files:
        shutil.copyfile(ckpt / name, dest / name)
    if classifier is not None:
        for name in ("classifier.safetensors", "classifier.json"):
            shutil.copyfile(Path(classifier) / name, dest / name)
            files.append(name)
    step = int(json.loads((ckpt / MANIFEST).read_text()).get("step", 0))
    manifest = {"format": FORMAT_VERSION, "step": step, "source": str(ckpt),
                "files": {n: (dest / n).stat().st_size for n in sorted(files)}}
    write_json_atomic(dest / MANIFEST, manifest)
    return dest

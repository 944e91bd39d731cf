"""Checkpoints: safetensors weights + JSON config, written atomically, loaded strictly.

A checkpoint is a folder ``step-NNNNNNN/`` holding ``model.safetensors``, ``ema.safetensors``, ``config.json``,
``state.pt`` (optimizer, LR schedule, step, RNG states; loaded with ``torch.load(..., weights_only=True)``) and
``manifest.json``, written last: a folder without a manifest is incomplete and never loaded. The folder is built
under a temporary name and renamed into place (ANCHORS.md: reliability practices).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from diffuscope.checks import limits, validate
from diffuscope.checks.errors import UsageError, one_line, quote
from diffuscope.io import config as config_io

MANIFEST = "manifest.json"
# 1: {"files": {name: size}}; 2: {"files": {name: {"size", "sha256"}}}, verified on every load (docs/limits.md).
FORMAT_VERSION = 2
HASH_CHUNK = 1024 * 1024
# Every file a model folder may use (a checkpoint, a built-in model): present, it must be listed in the manifest.
USED_FILES = ("config.json", "model.safetensors", "ema.safetensors", "state.pt", "tuned_grids.json",
              "autoencoder.json", "autoencoder.safetensors", "classifier.json", "classifier.safetensors")
TMP_PREFIX = ".tmp-"


class SavesInto(Protocol):
    """Something a checkpoint carries beside its weights: it writes its own files into the checkpoint folder."""

    def save_into(self, folder: Path) -> None: ...


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
    from diffuscope.io.outputs import write_failed

    path = Path(path)
    text = json.dumps(data, indent=2)  # before any file exists: a value that cannot be written leaves nothing
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX, suffix=".json")
    except OSError as e:
        raise write_failed(e, path) from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # a full or read-only disk: one line naming the file; the old file (if any) is intact
        Path(tmp).unlink(missing_ok=True)
        raise write_failed(e, path) from None
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
    model_config: Any,
    run_config: dict[str, Any],
    state: dict[str, Any],
    beside: Sequence[SavesInto] = (),
) -> Path:
    """Write ``run_checkpoints/step-NNNNNNN`` atomically and return its path. ``model``/``ema`` are the nets;
    each of ``beside`` writes its files into the folder before the manifest, so the manifest lists them (a latent
    model's codec, nets/codec.py; a student's tuned grids, training/distill.py)."""
    run_checkpoints = Path(run_checkpoints)
    for label, module in (("model", model), ("ema", ema)):  # never write weights that cannot be used
        for k, v in module.state_dict().items():
            validate.check_finite(v, f"refusing to save step {step}: {label} weights {k} are not finite")
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
        for extra in beside:
            extra.save_into(tmp)
        files = sorted(p.name for p in tmp.iterdir())
        for name in files:
            _fsync_file(tmp / name)
        manifest = {"format": FORMAT_VERSION, "step": step, "files": file_entries(tmp, files)}
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


def save_or_stop(ckpt_dir: Path, step: int, error: type[Exception], **save_options) -> Path:
    """``save_checkpoint``, where a full disk (or any OS error) raises ``error`` with one line naming the step, the
    cause and the folder; the previous checkpoint stays intact (the new one is built aside and renamed)."""
    previous = list_checkpoints(ckpt_dir)
    try:
        return save_checkpoint(ckpt_dir, step, **save_options)
    except validate.NonFiniteError:
        raise
    # safetensors reports a full disk as SafetensorError, torch.save as RuntimeError ('PytorchStreamWriter failed
    # writing file ...: file write failed')
    except (OSError, SafetensorError, RuntimeError) as e:
        kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
        reason = getattr(e, "strerror", None) or (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise error(f"could not save the checkpoint of step {step} ({reason}) to {ckpt_dir}; {kept}") from None


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


BUILTIN_MODELS_DIR = Path(__file__).parent.parent / "models"


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


def sha256_file(path: Path) -> str:
    """The sha256 of a file, streamed in 1 MiB chunks (constant memory)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_entries(folder: Path, names) -> dict[str, dict[str, Any]]:
    """The manifest's ``files`` table: size and sha256 of each named file of ``folder``."""
    return {n: {"size": (Path(folder) / n).stat().st_size, "sha256": sha256_file(Path(folder) / n)}
            for n in sorted(names)}


def parse_manifest_file(ckpt: Path) -> validate.Manifest:
    """The manifest of a checkpoint folder, typed (validate.parse_manifest), without checking the files."""
    path = Path(ckpt) / MANIFEST
    try:
        if path.stat().st_size > 1024 * 1024:
            raise UsageError(f"{path} is larger than 1 MiB: not a diffuscope manifest")
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"checkpoint {ckpt} has an unreadable {MANIFEST}: {one_line(str(e), 120)}") from None
    return validate.parse_manifest(raw, str(path))


def read_manifest(ckpt: Path, *, required: tuple[str, ...] = ("config.json", "ema.safetensors")) -> dict[str, Any]:
    """Check a checkpoint against its manifest: the ``required`` files are listed, every listed file has its
    recorded size and sha256 (streamed). A format-1 manifest (sizes only) is refused with the command that
    upgrades it. Returns the manifest as a dict (``step``, ``files``, ``format``)."""
    manifest = parse_manifest_file(ckpt)
    where = Path(ckpt) / MANIFEST
    if manifest.format < 2:
        raise UsageError(f"checkpoint {ckpt} has a format-1 manifest (file sizes only, no sha256): if you trust its "
                         f"files, upgrade it with `python scripts/remanifest.py {ckpt}`")
    missing = [n for n in required if n not in manifest.files]
    if missing:
        raise UsageError(f"{where} does not list {', '.join(missing)}: the checkpoint cannot be verified")
    unlisted = [n for n in USED_FILES if n not in manifest.files and (Path(ckpt) / n).exists()]
    if unlisted:  # a file the model would use (tuned grids, a classifier) that nobody vouched for
        raise UsageError(f"checkpoint {ckpt} holds {', '.join(unlisted)}, not listed in its {MANIFEST}: refusing "
                         "a file it cannot verify (remove it, or install it with the command that writes it)")
    for name, entry in manifest.files.items():
        f = Path(ckpt) / name
        if not f.is_file() or f.stat().st_size != entry.size:
            raise UsageError(f"checkpoint file {f} is missing or truncated (expected {entry.size} bytes)")
    for name, entry in manifest.files.items():
        if sha256_file(Path(ckpt) / name) != entry.sha256:
            raise UsageError(f"checkpoint file {Path(ckpt) / name} does not match the sha256 in its manifest: "
                             "it is corrupt or was changed after it was written")
    return {"format": manifest.format, "step": manifest.step, "source": manifest.source,
            "files": {n: {"size": e.size, "sha256": e.sha256} for n, e in manifest.files.items()}}


def remanifest(ckpt: str | Path) -> Path:
    """Upgrade a checkpoint's format-1 manifest (sizes only) to format 2 (sizes + sha256), trusting the files as
    they are now; the files themselves are not touched. Sizes must still match the old manifest."""
    ckpt = Path(ckpt)
    manifest = parse_manifest_file(ckpt)
    for name, entry in manifest.files.items():
        f = ckpt / name
        if not f.is_file() or f.stat().st_size != entry.size:
            raise UsageError(f"checkpoint file {f} is missing or truncated (expected {entry.size} bytes): "
                             "not re-manifesting a damaged checkpoint")
    raw = json.loads((ckpt / MANIFEST).read_text())
    raw["format"] = FORMAT_VERSION
    raw["files"] = file_entries(ckpt, manifest.files)
    write_json_atomic(ckpt / MANIFEST, raw)
    return ckpt / MANIFEST


def verify_listed(ckpt: str | Path, name: str) -> bool:
    """Whether file ``name`` of a model folder may be used: True when the folder has a manifest listing it with
    its current size and sha256; False when the folder has no manifest (not a checkpoint: nothing to verify
    against). A file unlisted in, or changed since, the folder's manifest is refused in one line."""
    ckpt = Path(ckpt)
    if not (ckpt / MANIFEST).is_file():
        return False
    manifest = parse_manifest_file(ckpt)
    entry = manifest.files.get(name)
    f = ckpt / name
    if entry is None:
        raise UsageError(f"{f} is not listed in {ckpt / MANIFEST}: refusing a file the checkpoint cannot verify")
    if not f.is_file() or f.stat().st_size != entry.size or sha256_file(f) != entry.sha256:
        raise UsageError(f"{f} does not match the size and sha256 in {ckpt / MANIFEST}: it was changed after it "
                         "was installed")
    return True


def record_in_manifest(ckpt: str | Path, name: str) -> None:
    """List file ``name`` of a verified checkpoint in its manifest with its current size and sha256 (added or
    updated): for a file written into a finished checkpoint, such as tuned grids installed later."""
    ckpt = Path(ckpt)
    raw = json.loads((ckpt / MANIFEST).read_text())
    raw["files"] = {**raw.get("files", {}), **file_entries(ckpt, [name])}
    write_json_atomic(ckpt / MANIFEST, raw)


def load_weights(module: torch.nn.Module, file: Path) -> None:
    """Strict safetensors load: a truncated file, a pickle or another architecture is refused in one line."""
    file = Path(file)
    if not file.is_file():
        raise UsageError(f"checkpoint file {file} is missing")
    with file.open("rb") as f:
        head = f.read(2)
    if head[:1] == b"\x80" or head == b"PK":
        raise UsageError(f"{file} is a pickle/zip file, not safetensors: refusing to unpickle it")
    expected = module.state_dict()
    header = limits.read_safetensors_header(file)  # names, shapes and offsets checked before anything is mapped
    missing, unexpected = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if missing or unexpected:
        raise UsageError(
            f"{file} does not match the model config (missing {missing[:3]}, unexpected "
            f"{[quote(u, 40) for u in unexpected[:3]]})"
        )
    for k, (_, shape) in header.items():
        if shape != tuple(expected[k].shape):
            raise UsageError(f"{file} does not match the model config: {k} has shape {shape}, "
                             f"config expects {tuple(expected[k].shape)}")
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as e:
        raise UsageError(f"{file} is not a valid safetensors file ({one_line(str(e), 120)})") from None
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise UsageError(f"{file}: tensor {k} holds NaN or inf values: refusing non-finite weights")
    module.load_state_dict(tensors, strict=True)


def load_training_state(ckpt: Path) -> dict[str, Any]:
    """The optimizer/RNG/step state, with torch.load(weights_only=True): no code can run from it."""
    path = Path(ckpt) / "state.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or pickled-object file
        raise UsageError(f"cannot load training state {path}: {one_line(str(e), 120)}") from None
    validate.expect(state, dict, str(path), "the training state")
    for key, kind in (("optimizer", dict), ("lr_schedule", dict), ("rng_cpu", torch.Tensor), ("step", int)):
        if key not in state:
            raise UsageError(f"{path}: the training state has no {quote(key)}: it cannot be resumed")
        validate.expect(state[key], kind, str(path), key)
    validate.int_in(state["step"], str(path), "step", 0, 2**62)
    if "elapsed_s" in state:
        validate.finite_number(state["elapsed_s"], str(path), "elapsed_s", 0, 1e12)
    return state

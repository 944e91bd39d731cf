"""The run folder: RUN_DIR/config.json, metrics.csv, samples/, checkpoints/step-NNNNNNN/."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from diffuscope.checks.errors import UsageError
from diffuscope.io import checkpoint as ckpt_io
from diffuscope.io import outputs

METRICS_FIELDS = ("step", "loss", "lr", "grad_norm", "images_per_s", "elapsed_s")


def check_run_dir(run_dir: Path, resume: str | None) -> None:
    """Refuse to overwrite: an existing non-empty RUN_DIR needs --resume, and --resume needs a run folder."""
    if resume is not None and not resume.strip():
        raise UsageError("--resume must be 'latest' or a checkpoint folder, got ''")
    outputs.check_train_out(run_dir, resume)
    if resume is not None and resume != "latest":
        ckpt_io.resolve_checkpoint(resume)


@contextmanager
def run_lock(run_dir: Path, resume: str | None, *, enabled: bool = True) -> Iterator[None]:
    """Hold RUN_DIR's exclusive lock for the whole run and check the folder again once it is held: of two runs
    started into one folder in the same instant, the second is refused (outputs.RunLock)."""
    if not enabled:
        yield
        return
    created = not Path(run_dir).exists()
    lock = outputs.RunLock(run_dir)
    try:
        check_run_dir(run_dir, resume)
        yield
    except BaseException:  # nothing written yet (a teacher that did not load): no empty run folder is left
        lock.release()
        outputs.remove_if_unused(Path(run_dir), created)
        raise
    lock.release()


def find_resume(run_dir: Path, resume: str) -> Path | None:
    """'latest' = the newest complete checkpoint of RUN_DIR (None for a fresh folder); else a checkpoint path."""
    if resume == "latest":
        found = ckpt_io.list_checkpoints(run_dir / "checkpoints")
        return found[-1] if found else None
    return ckpt_io.resolve_checkpoint(resume)


def restore(source: Path, net: torch.nn.Module, ema_net: torch.nn.Module, opt: torch.optim.Optimizer,
            lr_sched: torch.optim.lr_scheduler.LRScheduler) -> dict:
    """Load a complete checkpoint into a run being resumed (weights, EMA, optimizer, LR schedule), every file
    verified against its manifest first; returns the training state (step, RNG, elapsed seconds ...)."""
    ckpt_io.read_manifest(source, required=("config.json", "model.safetensors", "ema.safetensors", "state.pt"))
    ckpt_io.load_weights(net, source / "model.safetensors")
    ckpt_io.load_weights(ema_net, source / "ema.safetensors")
    state = ckpt_io.load_training_state(source)
    opt.load_state_dict(state["optimizer"])
    lr_sched.load_state_dict(state["lr_schedule"])
    return state


def prune_checkpoints(ckpt_dir: Path, keep: int) -> list[Path]:
    """Keep the newest ``keep`` complete checkpoints (0 = keep all); return the removed ones."""
    import shutil

    found = ckpt_io.list_checkpoints(ckpt_dir)
    removed = found[:-keep] if keep and len(found) > keep else []
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


class MetricsLog:
    """RUN_DIR/metrics.csv; on resume, rows after the resumed step are dropped so the file matches the weights."""

    def __init__(self, path: Path, start_step: int, fields: tuple[str, ...] = METRICS_FIELDS):
        self.path = path
        self.fields = fields
        rows = []
        if start_step and path.is_file():
            with path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
        text = io.StringIO()
        w = csv.DictWriter(text, self.fields)
        w.writeheader()
        w.writerows(rows)
        self._replace(text.getvalue())

    def _replace(self, text: str) -> None:
        """The whole file, written aside and renamed into place: a full disk leaves the old file (or none), never
        a 0-byte or half one; the error names the file."""
        import os
        import tempfile

        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-", suffix=".csv")
            outputs.default_mode(fd)
            with os.fdopen(fd, "w", newline="") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            tmp = None
        except OSError as e:
            raise outputs.write_failed(e, self.path) from None
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)

    def write(self, row: dict) -> None:
        """Append one row; a failed append (a full disk) is cut back off, so the file keeps only whole rows."""
        text = io.StringIO()
        csv.DictWriter(text, self.fields).writerow(row)
        size = self.path.stat().st_size if self.path.exists() else 0
        try:
            with self.path.open("a", newline="") as f:
                f.write(text.getvalue())
        except OSError as e:
            try:
                with self.path.open("r+") as f:
                    f.truncate(size)
            except OSError:
                pass
            raise outputs.write_failed(e, self.path) from None

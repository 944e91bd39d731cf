"""Where commands write: one rule for every ``--out``, the exclusive run lock, and file-system errors as one line.

The rule: a command writes into a new or empty folder. A non-empty folder is refused, except one holding only files
that the same command names afresh on every run (``sample``: numbered images and grids), to which it adds: nothing
already written is replaced.
A ``--out`` that names a file, or sits on a read-only or full file system, is a one-line error naming the path.

A run folder is owned by one training process at a time: an ``fcntl.flock`` on ``RUN_DIR/.lock`` taken before the
folder is checked or written (not a check followed by a write), held until the process ends or releases it.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from diffuscope.checks.errors import UsageError

LOCK = ".lock"
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EFBIG})


def os_error_line(e: OSError, path: str | Path | None = None) -> str:
    """'cannot write PATH: No space left on device' for any OSError."""
    where = path or e.filename or "a file"
    reason = e.strerror or str(e) or type(e).__name__
    verb = "cannot write" if e.errno in _WRITE_ERRNOS else "file error on"
    return f"{verb} {where}: {reason}"


# What `sample` names its files (generate.write_images): numbered images and grids, never reused.
_OWN_FILES = {"sample": re.compile(r"^(\d{5}-\d+|grid(-\d{5})?)\.png$")}


def _visible(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name != LOCK]


def is_own_output(folder: Path, command: str) -> bool:
    """Whether every file in ``folder`` is one ``command`` writes with a fresh name (only ``sample`` does)."""
    pattern = _OWN_FILES.get(command)
    return pattern is not None and all(p.is_file() and pattern.match(p.name) for p in _visible(folder))


def prepare_out(out: str | Path, command: str) -> Path:
    """Check ``--out`` for ``command`` under the rule above, creating nothing; return it as a Path."""
    if not str(out).strip():
        raise UsageError("--out must not be empty")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder: give a new or empty folder")
    if out.is_dir():
        try:
            content = _visible(out)
        except OSError as e:
            raise UsageError(os_error_line(e, out)) from None
        if content and not is_own_output(out, command):
            own = f" (nor only earlier `{command}` images)" if command in _OWN_FILES else ""
            raise UsageError(f"--out {out} is not empty{own}: choose a new or empty folder (nothing already "
                             "written is overwritten)")
    check_writable(out)
    return out


def check_writable(out: Path) -> None:
    """Up front, without creating anything (a failed command leaves no empty folder behind): the nearest existing
    folder of ``out`` must be a folder, writable, on a writable file system with free space."""
    ancestor = out
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"--out {out}: {ancestor} is a file, not a folder")
    try:
        fs = os.statvfs(ancestor)
    except OSError as e:
        raise UsageError(os_error_line(e, out)) from None
    if fs.f_flag & os.ST_RDONLY:
        raise UsageError(f"cannot write {out}: Read-only file system")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {out}: Permission denied")
    if (fs.f_bavail == 0 and os.geteuid() != 0) or fs.f_bfree == 0:
        raise UsageError(f"cannot write {out}: No space left on device")


# --- the run lock --------------------------------------------------------------------------------------------------


class RunLock:
    """An exclusive, non-blocking ``flock`` on RUN_DIR/.lock; released on ``release()`` or when the process ends
    (the kernel drops it, so a killed run never leaves a stale lock)."""

    def __init__(self, run_dir: str | Path):
        import fcntl

        self.path = Path(run_dir) / LOCK
        try:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except (FileExistsError, NotADirectoryError):
            raise UsageError(f"run folder {run_dir}: a part of the path is a file, not a folder") from None
        except OSError as e:
            raise UsageError(os_error_line(e, run_dir)) from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self.fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise UsageError(f"run folder {run_dir} is in use by another training process{self._holder()}: "
                                 "wait for it to finish or choose another --out") from None
            raise UsageError(os_error_line(e, self.path)) from None
        try:  # who holds it, for the message above (informative only: the flock is the lock)
            os.ftruncate(self.fd, 0)
            os.write(self.fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass

    def _holder(self) -> str:
        try:
            pid = self.path.read_text().strip()
        except OSError:
            return ""
        return f" (pid {pid})" if pid.isdigit() else ""

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def is_run_folder(path: str | Path) -> bool:
    """A folder `train` wrote: RUN_DIR/config.json and RUN_DIR/checkpoints/."""
    path = Path(path)
    return (path / "config.json").is_file() and (path / "checkpoints").is_dir()


def check_train_out(run_dir: str | Path, resume: str | None) -> None:
    """`train --out`: new or empty (the lock file aside) for a fresh run; a run folder for ``--resume latest``."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out {run_dir} is a file, not a folder: give a new folder for the run")
    content = _visible(run_dir) if run_dir.is_dir() else []
    if resume is None and content:
        raise UsageError(f"run folder {run_dir} already exists and is not empty: choose a new --out or pass --resume")
    if resume == "latest" and content and not is_run_folder(run_dir):
        raise UsageError(f"--resume latest: {run_dir} is not a run folder (no config.json and checkpoints/): "
                         "refusing to write into it")
    if resume not in (None, "latest") and content and not is_run_folder(run_dir):
        raise UsageError(f"--resume: --out {run_dir} is neither empty nor a run folder: refusing to write into it")

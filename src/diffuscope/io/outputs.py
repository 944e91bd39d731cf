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
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from diffuscope.checks.errors import UsageError

LOCK = ".lock"
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EFBIG})


class WriteFailed(OSError):
    """A write that failed (a full or read-only disk), with the path it was writing: one line, exit 1."""


def os_error_line(e: OSError, path: str | Path | None = None) -> str:
    """'cannot write PATH: No space left on device' for any OSError."""
    where = path or e.filename or "a file"
    reason = e.strerror or str(e) or type(e).__name__
    verb = "cannot write" if e.errno in _WRITE_ERRNOS or isinstance(e, WriteFailed) else "file error on"
    return f"{verb} {where}: {reason}"


def write_failed(e: BaseException, path: str | Path) -> WriteFailed:
    """``e`` (an OSError, or the RuntimeError/SafetensorError torch.save and safetensors raise on a full disk) as
    a WriteFailed naming ``path``."""
    if isinstance(e, OSError) and e.errno is not None:
        return WriteFailed(e.errno, e.strerror or str(e), str(path))
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
    return WriteFailed(errno.EIO, reason, str(path))


@contextmanager
def writing(path: str | Path, *, remove_partial: bool = False) -> Iterator[None]:
    """Run a write of ``path``: an OSError, a RuntimeError (a full or read-only disk, torch.save's
    'PytorchStreamWriter failed') or safetensors' SafetensorError becomes one WriteFailed line naming ``path``;
    with ``remove_partial`` a file that the failed write left behind (0 bytes or half written) is removed."""
    path = Path(path)
    existed = path.exists()
    try:
        yield
    except Exception as e:
        if isinstance(e, WriteFailed) or not _is_write_error(e):
            raise
        if remove_partial and not existed:
            with suppress(OSError):
                path.unlink(missing_ok=True)
        raise write_failed(e, path) from None


def _is_write_error(e: Exception) -> bool:
    if isinstance(e, OSError):
        return True
    if type(e).__name__ == "SafetensorError":  # safetensors reports a failed write (a full disk) this way
        return True
    return isinstance(e, RuntimeError) and _is_write_runtime_error(e)


def _is_write_runtime_error(e: RuntimeError) -> bool:
    """torch.save / PIL / safetensors report a failed write as a RuntimeError naming a file write."""
    text = str(e).lower()
    return any(k in text for k in ("write", "space", "disk", "file", "errno"))


_UMASK: int | None = None


def default_mode(fd: int) -> None:
    """Give a temporary file (mkstemp: 0600) the mode an ordinary ``open`` would have (0666 less the umask)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    with suppress(OSError):  # a file system without modes
        os.fchmod(fd, 0o666 & ~_UMASK)


def save_atomic(path: str | Path, write, *, overwrite: bool = True) -> Path:
    """Write ``path`` whole under a temporary name beside it (``write(binary_file)``), then move it into place: a
    full or read-only disk leaves nothing behind (no 0-byte or half file) and is one WriteFailed line naming
    ``path`` (exit 1). ``overwrite=False`` links instead of renaming: an existing file is never replaced."""
    import tempfile

    path = Path(path)
    if not overwrite and path.exists():
        raise UsageError(f"{path} already exists: refusing to overwrite it")
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
        default_mode(fd)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
            tmp = None
        else:
            os.link(tmp, path)
    except FileExistsError:
        raise UsageError(f"{path} already exists: refusing to overwrite it") from None
    except (OSError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not _is_write_runtime_error(e):
            raise
        raise write_failed(e, path) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | Path, text: str, *, overwrite: bool = True) -> Path:
    """``save_atomic`` for text (UTF-8)."""
    data = text.encode("utf-8")
    return save_atomic(path, lambda f: f.write(data), overwrite=overwrite)


# What `sample` names its files (generate.write_images): numbered images and grids, never reused.
_OWN_FILES = {"sample": re.compile(r"^(\d{5,}-\d+|grid(-\d{5,})?)\.png$")}
_IMAGE_NUMBER = re.compile(r"^(\d{5,})-\d+\.png$")


def next_image_number(folder: str | Path) -> int:
    """The number of the next image `sample` writes into ``folder``: 1 + the largest number already there (0 for
    none). Never a count of files: after an image was deleted, new numbers still never collide with old ones."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    numbers = [int(m[1]) for p in folder.iterdir() if (m := _IMAGE_NUMBER.match(p.name))]
    return max(numbers) + 1 if numbers else 0


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

    def __init__(self, run_dir: str | Path, holder: str = "another training process"):
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
                raise UsageError(f"run folder {run_dir} is in use by {holder}{self._holder()}: "
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


@contextmanager
def locked_out(out: str | Path, command: str) -> Iterator[Path]:
    """``prepare_out`` (the --out rule) and then the folder's exclusive lock for the whole command, with the rule
    checked again once the lock is held: two runs of a long command (``tune-steps``) into one folder, even started
    in the same instant, cannot mix their files; the second is refused in one line. If the command fails and the
    folder holds nothing but the lock, the lock file (and the folder, if this call created it) is removed."""
    out = prepare_out(out, command)
    created = not out.exists()
    lock = RunLock(out, f"another `{command}` run")
    try:
        prepare_out(out, command)
        yield out
    except BaseException:
        lock.release()
        remove_if_unused(out, created)
        raise
    lock.release()


def remove_if_unused(folder: Path, created: bool) -> None:
    """After a failed command: a folder holding nothing but the lock file loses the lock file, and the folder
    itself when this command created it (a failed command leaves no empty folder behind)."""
    try:
        if folder.is_dir() and not _visible(folder):
            (folder / LOCK).unlink(missing_ok=True)
            if created:
                folder.rmdir()
    except OSError:
        pass


@contextmanager
def no_empty_folder_on_failure(out: str | Path) -> Iterator[None]:
    """Around a command that creates ``out`` before it can fail (a model that does not load): if it fails and
    ``out`` was new and is still empty, ``out`` is removed."""
    out = Path(out)
    created = not out.exists()
    try:
        yield
    except BaseException:
        remove_if_unused(out, created)
        raise


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

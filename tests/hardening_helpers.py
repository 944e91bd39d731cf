"""Shared by the hardening tests (issue 19): run the CLI, assert one-line errors, snapshot folders, damage
checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

from diffuscope.checks.errors import MAX_ERROR_CHARS
from diffuscope.cli import main
from diffuscope.io.checkpoint import file_entries


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, argv, code=2, pattern=None):
    got, _, err = run_cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert got == code, err
    assert len(lines) == 1 and lines[0].startswith("diffuscope: error:"), err
    assert len(lines[0]) <= MAX_ERROR_CHARS + 60, lines[0][:200]
    if pattern:
        assert pattern in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def rehash(ckpt: Path, name: str) -> None:
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["files"][name] = file_entries(ckpt, [name])[name]
    (ckpt / "manifest.json").write_text(json.dumps(manifest))



"""The docs cannot rot: every `from diffuscope... import ...` line in a code block of README.md or docs/*.md imports,
and every dotted `diffuscope.x.y` name the prose quotes resolves (a module, or a name in one)."""

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
IMPORT = re.compile(r"^\s*(from\s+diffuscope[\w.]*\s+import\s+.+|import\s+diffuscope[\w.]*(\s+as\s+\w+)?)\s*$")
DOTTED = re.compile(r"`[^`]*?\b(diffuscope(?:\.[A-Za-z_]\w*)+)")


def _code_lines(text: str):
    """Lines of fenced (```) and indented (4 spaces) code blocks, multi-line ``import (...)`` joined."""
    fenced, pending = False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not (fenced or line.startswith("    ")):
            continue
        code = line.split("#", 1)[0].rstrip()
        if pending:
            pending += " " + code.strip()
            if ")" in code:
                yield pending.replace("(", "").replace(")", "")
                pending = ""
            continue
        if code.rstrip().endswith("("):
            pending = code
            continue
        yield code


def _imports():
    for path in DOCS:
        for line in _code_lines(path.read_text(encoding="utf-8")):
            if IMPORT.match(line):
                yield pytest.param(line.strip(), id=f"{path.name}: {line.strip()}")


def _dotted():
    seen = set()
    for path in DOCS:
        for name in DOTTED.findall(path.read_text(encoding="utf-8")):
            if name not in seen:
                seen.add(name)
                yield pytest.param(name, id=f"{path.name}: {name}")


def test_the_docs_have_import_lines_to_check():
    lines = [p.values[0] for p in _imports()]
    assert any("load_model" in line for line in lines)  # README's "The Python API" block is found
    assert len(lines) >= 8


@pytest.mark.parametrize("line", list(_imports()))
def test_every_import_line_in_the_docs_imports(line):
    exec(compile(line, "<docs>", "exec"), {})


@pytest.mark.parametrize("name", list(_dotted()))
def test_every_dotted_name_in_the_docs_resolves(name):
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            assert hasattr(obj, attr), f"{name}: {'.'.join(parts[:cut])} has no {attr!r}"
            obj = getattr(obj, attr)
        return
    raise AssertionError(f"{name}: no module")

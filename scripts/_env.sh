# Shared by the scripts: create or reuse .venv and install what the project needs. Callers pass the pip extras
# explicitly, "" for none: `source _env.sh` without an argument hands on the caller's own arguments.
# torch is installed first and pinned to the CPU wheel stored on these machines (torch==2.13.0): an unpinned
# torch would pull a multi-GB CUDA build. On a GPU machine, set DIFFUSCOPE_TORCH to the torch you want.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DIFFUSCOPE_VENV:-$ROOT/.venv}"
EXTRAS="${1:-}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[diffuscope] creating virtual environment $VENV" >&2
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.diffuscope-installed${EXTRAS:+-$EXTRAS}"
WANT="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[diffuscope] installing dependencies into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${DIFFUSCOPE_TORCH:-torch==2.13.0}"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT${EXTRAS:+[$EXTRAS]}"
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"

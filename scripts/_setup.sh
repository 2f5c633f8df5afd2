# Shared by run.sh and test.sh: create .venv and install the project (with EXTRAS) once,
# again only when pyproject.toml or constraints.txt change.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1; then PY="$candidate"; break; fi
  done
fi
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $PY ..." >&2
  "$PY" -m venv .venv
fi
stamp=".venv/.installed-${EXTRAS:-base}"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "Installing dependencies (the first time compiles llama.cpp: several minutes) ..." >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  spec="."
  [ -n "${EXTRAS:-}" ] && spec=".[${EXTRAS}]"
  .venv/bin/python -m pip install --quiet -c constraints.txt -e "$spec"
  echo "$want" > "$stamp"
fi

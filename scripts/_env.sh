# Shared by scripts/demo and scripts/test: a virtual environment in .venv with mbml (and its test,
# minari and ray extras) installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.mbml-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test,minari,ray]"
  touch "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"

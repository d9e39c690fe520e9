#!/usr/bin/env bash
# ./run.sh [FLAGS]   train DavidNet, export SavedModel + ONNX, check them (flags: ./run.sh --help)
# ./run.sh test [PYTEST ARGS]   run the test suite
# ./run.sh bench [--quick]      run the benchmarks
# Uses the active virtualenv, else creates .venv/ beside this script, and installs
# requirements.txt into it unless every pinned version is already there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ -n "${VIRTUAL_ENV:-}" ]]; then
  PY="$VIRTUAL_ENV/bin/python"
else
  if [[ ! -x "$ROOT/.venv/bin/python" ]]; then
    BASE_PY="${PYTHON:-python3}"
    if ! "$BASE_PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      echo "run.sh: needs Python 3.10 or newer as '$BASE_PY' (set PYTHON=/path/to/python3)" >&2
      exit 2
    fi
    echo "run.sh: creating $ROOT/.venv" >&2
    "$BASE_PY" -m venv "$ROOT/.venv"
  fi
  PY="$ROOT/.venv/bin/python"
fi

# Install only when a pinned requirement is missing or at another version.
if ! "$PY" - "$ROOT/requirements.txt" <<'PYCHECK'
import sys
from importlib.metadata import PackageNotFoundError, version
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, _, pinned = line.partition("==")
    try:
        if version(name) != pinned:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PYCHECK
then
  echo "run.sh: installing requirements.txt" >&2
  "$PY" -m pip install --disable-pip-version-check -q -r "$ROOT/requirements.txt"
fi

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
case "${1:-}" in
  test) shift; cd "$ROOT"; exec "$PY" -m pytest tests "$@" ;;
  bench) shift; exec "$PY" -m bench "$@" ;;
esac
# Train, export SavedModel and ONNX (with parity), evaluate the ONNX model.
exec "$PY" -m export.pipeline "$@"

#!/usr/bin/env bash
# ./run.sh [FLAGS]   train DavidNet, export SavedModel + ONNX, check them (flags: ./run.sh --help)
# ./run.sh test [--fast] [PYTEST ARGS]   run the test suite (--fast: leave out the slow tests)
# ./run.sh bench [--quick]      run the benchmarks
# ./run.sh bench peers [--quick]   the same work on PyTorch, OpenVINO and MLServer, alternated
# ./run.sh repro --runs N --out DIR [--target 0.94] [FLAGS]   N seeds, their statistics
# ./run.sh repro --runs N --out DIR --shard K/M [--wait] [FLAGS]   one of M shards sharing DIR
# ./run.sh repro --report DIR [--runs N] [--target 0.94]   the report of the runs finished so far
# ./run.sh serve RUN_DIR|MODEL.onnx [FLAGS]   TensorFlow Serving's REST API on ONNX Runtime
# ./run.sh --print-install      print the pip command it would run, and stop
# Uses the active virtualenv, else creates .venv/ beside this script, and installs
# requirements.txt into it unless every pinned version is already there. With an NVIDIA GPU
# (nvidia-smi -L lists one, or DAVIDNET_DEVICE=gpu) it adds tensorflow[and-cuda] at the
# same version, whose CUDA 12 libraries TensorFlow needs to use the GPU; DAVIDNET_DEVICE=cpu
# installs the CPU set whatever the machine has.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ -n "${VIRTUAL_ENV:-}" ]]; then
  PY="$VIRTUAL_ENV/bin/python"
else
  BASE_PY="${PYTHON:-python3}"
  if [[ ! -x "$ROOT/.venv/bin/python" ]] &&
     ! "$BASE_PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "run.sh: needs Python 3.10 or newer as '$BASE_PY' (set PYTHON=/path/to/python3)" >&2
    exit 2
  fi
  PY="$ROOT/.venv/bin/python"
fi

# Which TensorFlow: the CUDA set when nvidia-smi lists a GPU (or DAVIDNET_DEVICE=gpu), the
# plain CPU set otherwise (or DAVIDNET_DEVICE=cpu). The version is requirements.txt's.
TF_VERSION="$(sed -n 's/^tensorflow==\([^ #]*\).*/\1/p' "$ROOT/requirements.txt")"
case "${DAVIDNET_DEVICE:-auto}" in
  gpu|GPU) FLAVOUR=gpu ;;
  cpu|CPU) FLAVOUR=cpu ;;
  auto|"")
    if command -v nvidia-smi >/dev/null 2>&1 && timeout 20 nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
      FLAVOUR=gpu
    else
      FLAVOUR=cpu
    fi ;;
  *) echo "run.sh: DAVIDNET_DEVICE=$DAVIDNET_DEVICE: expected gpu, cpu or auto" >&2; exit 2 ;;
esac
TF_REQ="tensorflow==$TF_VERSION"
[[ "$FLAVOUR" == gpu ]] && TF_REQ="tensorflow[and-cuda]==$TF_VERSION"
PIP_CMD=("$PY" -m pip install --disable-pip-version-check -q -r "$ROOT/requirements.txt" "$TF_REQ")

if [[ "${1:-}" == "--print-install" || -n "${DAVIDNET_PRINT_INSTALL:-}" ]]; then
  echo "${PIP_CMD[*]}"  # what would be installed, without installing or creating anything
  exit 0
fi
if [[ ! -x "$PY" ]]; then
  echo "run.sh: creating $ROOT/.venv" >&2
  "$BASE_PY" -m venv "$ROOT/.venv"
fi

# Install only when a pinned requirement (or, for the GPU, a CUDA package that
# tensorflow[and-cuda] needs) is missing or at another version.
if ! "$PY" - "$ROOT/requirements.txt" "$FLAVOUR" <<'PYCHECK'
import sys
from importlib.metadata import PackageNotFoundError, requires, version
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, _, pinned = line.partition("==")
    name = name.split("[")[0]  # tritonclient[http]: the package is tritonclient
    try:
        if version(name) != pinned:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
if sys.argv[2] == "gpu":
    try:
        from packaging.requirements import Requirement
    except ImportError:
        from pip._vendor.packaging.requirements import Requirement
    for spec in requires("tensorflow") or []:
        req = Requirement(spec)
        if req.marker is None or not req.marker.evaluate({"extra": "and-cuda"}):
            continue
        try:
            if version(req.name) not in req.specifier:
                sys.exit(1)
        except PackageNotFoundError:
            sys.exit(1)
PYCHECK
then
  echo "run.sh: installing requirements.txt with $TF_REQ" >&2
  "${PIP_CMD[@]}"
fi

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
case "${1:-}" in
  test) shift; cd "$ROOT"
    # --fast: every test but those marked slow (they train, start a server, or start a
    # child process that imports TensorFlow: tests/slow_rule.py)
    if [[ "${1:-}" == "--fast" ]]; then shift; set -- -m "not slow" "$@"; fi
    exec "$PY" -m pytest "$@" ;;  # no paths given: pyproject's testpaths, all of tests/
  bench) shift; exec "$PY" -m bench "$@" ;;
  repro) shift; exec "$PY" -m export.repro "$@" ;;
  serve) shift; exec "$PY" -m export.serve "$@" ;;
esac
# Train, export SavedModel and ONNX (with parity), evaluate the ONNX model.
exec "$PY" -m export.train_and_export "$@"

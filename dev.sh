#!/usr/bin/env bash
# The two set-up commands of the README:
#   ./dev.sh quickstart   create .venv, install, run `lantern quickstart`
#   ./dev.sh test         create .venv, install, run the test suite
# Extra arguments are passed on (to `lantern quickstart` or to pytest).
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python

# A bare `torch` requirement with no torch installed would pull a multi-GB CUDA build:
# install a CPU build first when no torch is importable.
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    "$VPY" -m pip install -q --upgrade pip
    "$VPY" -m pip install -q "torch==2.13.0" || "$VPY" -m pip install -q "torch>=2.4"
fi
"$VPY" -m pip install -q -e ".[dev]"

cmd=${1:-}
shift || true
case "$cmd" in
    quickstart) exec .venv/bin/lantern quickstart "$@" ;;
    test)       exec "$VPY" -m pytest -n 2 "$@" ;;
    *) echo "usage: ./dev.sh quickstart|test [args...]" >&2; exit 2 ;;
esac

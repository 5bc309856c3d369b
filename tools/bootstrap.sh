#!/usr/bin/env bash
# Create (once) the project's virtual environment in .venv, install bsi_d2 into it, then run
#   bash tools/bootstrap.sh demo [bsi-d2 demo options]   - the end-to-end demo
#   bash tools/bootstrap.sh test [pytest options]        - the test suite
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.bsi_d2-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip "setuptools<81" wheel
    .venv/bin/python -m pip install -q -e ".[test]"
    touch "$stamp"
fi
what=${1:-test}
shift || true
case "$what" in
    demo) exec .venv/bin/bsi-d2 demo "$@" ;;
    test) exec .venv/bin/python -m pytest -q "$@" ;;
    *) echo "usage: bash tools/bootstrap.sh {demo|test} [options]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Sets up the environment if needed, then runs the test suite on CPU, one pytest-xdist worker per
# core (at most 4). Extra arguments go to pytest (e.g. -n 0 for one process).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "${DGS_VENV:-$ROOT/.venv}/bin/python" -m pytest tests -q -p no:cacheprovider -n auto --maxprocesses 4 --dist loadgroup "$@"

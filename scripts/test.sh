#!/usr/bin/env bash
# Sets up the environment if needed, then runs the test suite on CPU. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "${DGS_VENV:-$ROOT/.venv}/bin/python" -m pytest tests -q -p no:cacheprovider "$@"

#!/usr/bin/env bash
# Sets up the environment if needed, then runs the demo on the scene shipped in the package.
# Extra arguments go to the demo (see: scripts/demo.sh --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "${DGS_VENV:-$ROOT/.venv}/bin/python" -m distilled_gs_ns.cli demo "$@"

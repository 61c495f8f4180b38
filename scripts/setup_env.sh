#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment with pinned dependencies.
# Idempotent: reinstalls only when pyproject.toml or constraints.txt changed.
# Needs only Python >= 3.10 with venv and pip, and access to the package index.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DGS_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.deps-sha256"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1)"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment in $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
    echo "[setup] installing nerfstudio 1.1.5, torch, gsplat and this package (first run: a few minutes)" >&2
    # --isolated: ignore user-level pip settings such as local wheel folders; a local CPU-only torch
    # build there would be picked over PyPI's and PyPI's torchvision does not import with it.
    "$VENV/bin/python" -m pip install --isolated -q --upgrade pip
    "$VENV/bin/python" -m pip install --isolated -q -c "$ROOT/constraints.txt" -e "$ROOT[test]"
    "$VENV/bin/python" -c "import torchvision, nerfstudio, gsplat, distilled_gs_ns" \
        || { echo "[setup] the environment does not import; see the messages above" >&2; exit 1; }
    echo "$WANT" > "$STAMP"
fi

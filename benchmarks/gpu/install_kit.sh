#!/usr/bin/env bash
# Installs the GPU kit (benchmarks/gpu/make_kit.sh) into an environment that has the GPU image's
# packages, without network: the kit's wheels with --no-index --no-deps, then this package from the
# working tree (editable), its build back end taken from the kit. Prints what it installed.
#
#   bash benchmarks/gpu/install_kit.sh KIT_DIR      # PYTHON: the interpreter (default python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
KIT="$(cd "$1" && pwd)"
PYTHON="${PYTHON:-python3}"

"$PYTHON" -m pip install --isolated --disable-pip-version-check --no-index -q --no-deps --no-compile "$KIT"/wheels/*.whl
"$PYTHON" -m pip install --isolated --disable-pip-version-check --no-index -q --no-deps --find-links "$KIT/build" -e "$ROOT"
"$PYTHON" - <<'PY'
import importlib.metadata as md
names = ["torch", "torchvision", "numpy", "nerfstudio", "gsplat", "distilled-gs-ns", "tyro", "viser", "numba"]
print("[kit] installed: " + ", ".join(f"{n} {md.version(n)}" for n in names))
PY

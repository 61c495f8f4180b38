#!/usr/bin/env bash
# Clean-room test of the GPU kit, on the CPU (docs/gpu.md): a fresh Python 3.12 environment with only
# the GPU image's packages (image_requirements.txt, from PyPI: torch 2.11, numpy 2, ...), the kit
# installed as there (install_kit.sh: --no-index --no-deps), and then, with every download refused:
#   - the teacher, the student (from the teacher) and momentum-gs (2 blocks) train 30 steps through
#     ns-train --machine.device-type cpu, each then ns-eval and distilled-gs export --format spz;
#   - distilled-gs export --format ply of the teacher (what replaces ns-export, which needs open3d);
#   - distilled-gs distill on the demo scene at 30 steps (three teachers, student, MCMC, prune-finetune).
# Whatever the kit lacks fails here, not on the GPU machine.
#
#   bash benchmarks/gpu/cleanroom.sh OUT   # KIT (default benchmarks/gpu/kit), PYTHON312, CLEANROOM_VENV
#
# Writes OUT/cleanroom.log, OUT/methods.json, OUT/image-freeze.txt (the environment before the kit).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="$(mkdir -p "$1" && cd "$1" && pwd)"
KIT="${KIT:-$HERE/kit}"
PYTHON312="${PYTHON312:-$(command -v python3.12 || ls -d "$HOME"/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | tail -1)}"
VENV="${CLEANROOM_VENV:-$HOME/.cache/distilled-gs-ns/cleanroom-py312}"
exec > >(tee "$OUT/cleanroom.log") 2>&1

echo "[cleanroom] $(date -u +%FT%TZ): the image's packages into a fresh $VENV"
rm -rf "$VENV"
"$PYTHON312" -m venv "$VENV"
"$VENV/bin/python" -m pip install --isolated --disable-pip-version-check -q -r "$HERE/image_requirements.txt"
"$VENV/bin/python" -m pip freeze --all --disable-pip-version-check | sort -f > "$OUT/image-freeze.txt"

echo "[cleanroom] the kit, without network"
PYTHON="$VENV/bin/python" bash "$HERE/install_kit.sh" "$KIT"

# As on the GPU machine: nothing can be downloaded (LPIPS weights, say) from here on.
export HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY= http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 no_proxy=
export PYTHONUNBUFFERED=1 PYTHONPATH="$ROOT"
cd "$ROOT"
RUNS="$(mktemp -d)"
trap 'rm -rf "$RUNS"' EXIT

echo "[cleanroom] teacher, student, momentum-gs (2 blocks): ns-train 30 steps on the CPU, ns-eval, export spz"
nice -n 19 "$VENV/bin/python" benchmarks/gpu/run_methods.py --device cpu --steps 30 --methods teacher student momentum-gs \
    --momentum-grids 1x2 --train-limit 900 --eval-limit 900 --runs "$RUNS/methods" --out "$OUT/methods.json"

echo "[cleanroom] distilled-gs export --format ply (ns-export gaussian-splat's file; ns-export itself needs open3d)"
nice -n 19 "$VENV/bin/distilled-gs" export --load-config "$RUNS/methods/teacher/distilled-3dgs-teacher/run/config.yml" \
    --format ply --output "$RUNS/teacher.ply"
if "$VENV/bin/python" -c 'import open3d' 2>/dev/null; then echo "[cleanroom] open3d is importable here"; else echo "[cleanroom] open3d is not installed (as on the GPU machine)"; fi

echo "[cleanroom] distilled-gs distill --steps 30 on the demo scene"
nice -n 19 "$VENV/bin/distilled-gs" distill --data distilled_gs_ns/data/demo_lego --steps 30 --device cpu \
    --output-dir "$RUNS/distill"

echo "[cleanroom] passed: $(date -u +%FT%TZ)"

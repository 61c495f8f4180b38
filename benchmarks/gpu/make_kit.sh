#!/usr/bin/env bash
# Builds the GPU kit: every wheel the GPU machine's image lacks to run this package, ns-train, ns-eval,
# `distilled-gs export` and `distilled-gs distill` (Python 3.12, x86_64), gsplat 1.4.0 compiled for
# torch 2.11 + CUDA 13 + sm_90, and lego at 400 px for the GPU check's last step. That machine has no
# network; the kit travels with the working tree (at most 64 MiB with each call) and
# benchmarks/gpu/install_kit.sh installs it there. See docs/gpu.md.
#
#   bash benchmarks/gpu/make_kit.sh [DIR]      # DIR defaults to benchmarks/gpu/kit (git-ignored)
#
# DIR/wheels/   installed there with pip --no-index --no-deps: kit_requirements.txt and the compiled gsplat
# DIR/build/    setuptools and wheel, to install this package from the working tree there
# DIR/src/      gsplat 1.4.0's sdist, the source of the compiled wheel
# DIR/lego400/  lego at 400 px (scripts/make_demo_scene.py) when ../shared/data/lego is there
# The gsplat compile (build_gsplat.sh, about 25 min on 2 cores) is redone only when its wheel is
# missing or its inputs (the build script and requirements, the patches) changed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
KIT="$(mkdir -p "${1:-$HERE/kit}" && cd "${1:-$HERE/kit}" && pwd)"
LEGO_SOURCE="${LEGO_SOURCE:-$ROOT/../shared/data/lego}"
SCENE_PYTHON="${SCENE_PYTHON:-${DGS_VENV:-$ROOT/.venv}/bin/python}"   # any Python with numpy and Pillow
LIMIT_BYTES=$(( 64 * 1024 * 1024 ))
shopt -s nullglob

# The GPU image's interpreter and platform, whatever this machine runs.
TARGET=(--isolated --disable-pip-version-check -q --only-binary=:all: --no-deps --python-version 3.12 --implementation cp --abi cp312
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

mkdir -p "$KIT/wheels" "$KIT/build"
find "$KIT/wheels" "$KIT/build" -name '*.whl' ! -name 'gsplat-*' -delete
python3 -m pip download "${TARGET[@]}" -d "$KIT/wheels" -r "$HERE/kit_requirements.txt"
python3 -m pip download "${TARGET[@]}" -d "$KIT/build" -r "$HERE/kit_build_requirements.txt"

STAMP="$KIT/.gsplat-inputs-sha256"
WANT="$(cat "$HERE/build_gsplat.sh" "$HERE/gsplat_build_requirements.txt" "$HERE"/gsplat-1.4.0-*.patch | sha256sum | cut -d' ' -f1)"
if ! ls "$KIT"/wheels/gsplat-1.4.0-cp312-*.whl >/dev/null 2>&1 || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    bash "$HERE/build_gsplat.sh" "$KIT"
    echo "$WANT" > "$STAMP"
fi

if [ -f "$LEGO_SOURCE/transforms_train.json" ] && [ -x "$SCENE_PYTHON" ]; then
    [ -f "$KIT/lego400/transforms.json" ] || "$SCENE_PYTHON" "$ROOT/scripts/make_demo_scene.py" "$LEGO_SOURCE" --size 400 --out "$KIT/lego400" >/dev/null
else
    echo "[kit] no lego at $LEGO_SOURCE (or no $SCENE_PYTHON): the GPU check prepares it there if ../shared travels" >&2
fi

echo "[kit] $KIT:"
(cd "$KIT" && find wheels build src -type f -printf '%s %p\n' | sort -k2 | awk '{printf "  %7.2f MiB  %s\n", $1 / 1048576, $2}')
[ -d "$KIT/lego400" ] && du -sb "$KIT/lego400" | awk '{printf "  %7.2f MiB  lego400/ (%s)\n", $1 / 1048576, "100 views at 400 px"}'
BYTES="$(find "$KIT" -type f -printf '%s\n' | awk '{s += $1} END {print s}')"
awk -v b="$BYTES" -v l="$LIMIT_BYTES" 'BEGIN {printf "[kit] total %.2f MiB (limit %.0f MiB)\n", b / 1048576, l / 1048576}'
[ "$BYTES" -le "$LIMIT_BYTES" ] || { echo "[kit] too large to travel with one call" >&2; exit 1; }

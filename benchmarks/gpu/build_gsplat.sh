#!/usr/bin/env bash
# Compiles gsplat 1.4.0's CUDA extension without a GPU, against torch 2.11.0+cu130 and CUDA 13.0 from
# PyPI's NVIDIA wheels, for Python 3.12 and sm_90 (H100/H200): a cp312 wheel whose gsplat.csrc loads on
# the GPU machine without compiling there. The wheel also holds the (patched) CUDA sources and glm, so
# gsplat's own JIT compile still works from it if the prebuilt extension does not load.
#
#   bash benchmarks/gpu/build_gsplat.sh KIT_DIR
#
# Writes KIT_DIR/wheels/gsplat-1.4.0-cp312-cp312-linux_x86_64.whl, KIT_DIR/src/gsplat-1.4.0.tar.gz (the
# sdist it was compiled from) and KIT_DIR/gsplat-build.log (command, versions, compile time).
# Needs Python 3.12 (PYTHON312; default python3.12 on PATH or pyenv's newest 3.12), network for the
# build environment's first set-up (~4 GB of wheels, kept in BUILD_VENV). MAX_JOBS: parallel compiles
# (default: all cores).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KIT="$(mkdir -p "$1" && cd "$1" && pwd)"
PYTHON312="${PYTHON312:-$(command -v python3.12 || ls -d "$HOME"/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | tail -1)}"
BUILD_VENV="${BUILD_VENV:-$HOME/.cache/distilled-gs-ns/gsplat-build-py312}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

[ -x "$PYTHON312" ] || { echo "[gsplat] needs a Python 3.12 interpreter (set PYTHON312)" >&2; exit 1; }
[ -x "$BUILD_VENV/bin/python" ] || "$PYTHON312" -m venv "$BUILD_VENV"
PY="$BUILD_VENV/bin/python"
"$PY" -m pip install --isolated -q -r "$HERE/gsplat_build_requirements.txt"

# The sources: PyPI's sdist lacks the glm headers (a git submodule); its py3-none-any wheel has them.
mkdir -p "$KIT/src" "$KIT/wheels" "$WORK/dl"
"$PY" -m pip download --isolated -q --no-deps --no-build-isolation --no-binary=:all: -d "$WORK/dl" gsplat==1.4.0
"$PY" -m pip download --isolated -q --no-deps --only-binary=:all: -d "$WORK/dl" gsplat==1.4.0
cp "$WORK/dl/gsplat-1.4.0.tar.gz" "$KIT/src/"
tar -xzf "$WORK/dl/gsplat-1.4.0.tar.gz" -C "$WORK"
SRC="$WORK/gsplat-1.4.0"
"$PY" -m zipfile -e "$WORK/dl/gsplat-1.4.0-py3-none-any.whl" "$WORK/py3wheel"
cp -r "$WORK/py3wheel/gsplat/cuda/csrc/third_party" "$SRC/gsplat/cuda/csrc/"
for patch in "$HERE"/gsplat-1.4.0-*.patch; do
    [ -e "$patch" ] && patch -d "$SRC" -p1 < "$patch"
done

CUDA_HOME="$("$PY" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')"
# torch links the extension with -lcudart; the runtime wheel ships only libcudart.so.13.
mkdir -p "$WORK/lib"
ln -s "$CUDA_HOME/lib/libcudart.so.13" "$WORK/lib/libcudart.so"

LOG="$KIT/gsplat-build.log"
START=$(date +%s)
(
    cd "$SRC"
    export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH" LIBRARY_PATH="$WORK/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
    export TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS="${MAX_JOBS:-$(nproc)}"
    echo "# $(date -u +%FT%TZ), $(nproc) cores, MAX_JOBS=$MAX_JOBS TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
    echo "# Python $("$PY" -c 'import platform; print(platform.python_version())'), torch $("$PY" -c 'import torch; print(torch.__version__)'), $(nvcc --version | tail -1), $(gcc --version | head -1)"
    echo "# patches: $(cd "$HERE" && ls gsplat-1.4.0-*.patch 2>/dev/null | tr '\n' ' ')"
    echo "# command: nice -n 19 python -m pip wheel -v --no-build-isolation --no-deps ."
    nice -n 19 "$PY" -m pip wheel -v --no-build-isolation --no-deps -w "$WORK/dist" .
) > "$LOG" 2>&1 || { tail -40 "$LOG" >&2; echo "[gsplat] build failed; log: $LOG" >&2; exit 1; }
echo "# compile time: $(( $(date +%s) - START )) s" >> "$LOG"

rm -f "$KIT"/wheels/gsplat-*.whl
cp "$WORK"/dist/gsplat-1.4.0-cp312-cp312-linux_x86_64.whl "$KIT/wheels/"
echo "[gsplat] $(tail -1 "$LOG"): $KIT/wheels/gsplat-1.4.0-cp312-cp312-linux_x86_64.whl" >&2

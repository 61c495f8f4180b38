#!/usr/bin/env bash
# The single GPU run (docs/gpu.md): on a bare GPU machine with the image's Python 3.12, torch 2.11 and
# CUDA 13, and the kit (benchmarks/gpu/make_kit.sh) in the working tree, in at most 8 minutes:
#   1. install the kit, load gsplat's CUDA extension (the kit's prebuilt one, else gsplat compiles it
#      with MAX_JOBS=16), one render through its kernels, versions   -> OUT/versions.json
#   2. tests/test_rasterizer_cuda.py; max abs differences of our rasterisers vs gsplat's kernels
#                                                                     -> OUT/rasterizer_cuda.json
#   3. every method through ns-train --machine.device-type cuda, ns-eval and distilled-gs export on
#      the demo scene (short runs)                                    -> OUT/methods.json
#   4. with the time left: lego at 400 px, teacher and student (2000 steps each: step times, render
#      FPS, peak GPU memory, metrics), momentum-gs with 1 and 4 blocks (ns-train only: peak memory)
#                                                                     -> OUT/lego.json, OUT/lego_momentum.json
# plus OUT/gpu_check.log (everything printed) and OUT/summary.json (each step: status, seconds).
# Each step has its own time limit. Without CUDA this is a dry run: the kit is installed and every
# step runs on the CPU at a few steps (gsplat's kernels and test_rasterizer_cuda.py are skipped).
#
#   bash benchmarks/gpu_check.sh OUT      # PYTHON: the interpreter (default python3); KIT, LEGO: see below
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(mkdir -p "$1" && cd "$1" && pwd)"
PYTHON="${PYTHON:-python3}"
KIT="${KIT:-$ROOT/benchmarks/gpu/kit}"
LEGO="${LEGO:-$KIT/lego400}"   # a 400 px lego (make_kit.sh prepares it), else the raw one beside the repo
[ -d "$LEGO" ] || LEGO="$ROOT/../shared/data/lego"
WORK="$(mktemp -d)"
START=$(date +%s)
STEPS_FILE="$WORK/steps.jsonl"
cd "$ROOT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1

export PYTHON PYTHONUNBUFFERED=1 PYTHONPATH="$ROOT" MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0
# Seconds for the whole check (GPU: under 8 minutes) and for each training run, export and evaluation;
# SLOW stretches every step's limit on the CPU.
if "$PYTHON" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    DEVICE=cuda BUDGET=470 SLOW=1 TRAIN_LIMIT=150 EVAL_LIMIT=90
else
    DEVICE=cpu BUDGET=7200 SLOW=8 TRAIN_LIMIT=900 EVAL_LIMIT=1500
    echo "[gpu_check] no CUDA: dry run on the CPU (CUDA steps skipped, tiny runs, CPU time limits)"
fi

left() { echo $(( BUDGET - ($(date +%s) - START) )); }

# step NAME LIMIT COMMAND...: runs COMMAND under min(LIMIT * SLOW, time left), records its status.
step() {
    local name="$1" limit=$(( $2 * SLOW )) begin status
    shift 2
    (( limit > $(left) )) && limit=$(left)
    begin=$(date +%s)
    if (( limit < 20 )); then
        status=skipped
        echo "[gpu_check] $name: skipped, $(left) s left"
    else
        echo "[gpu_check] $name (limit ${limit} s): $*"
        timeout -k 10 "$limit" "$@"
        case $? in 0) status=passed ;; 124|137) status=timeout ;; *) status=failed ;; esac
    fi
    echo "{\"step\": \"$name\", \"status\": \"$status\", \"seconds\": $(( $(date +%s) - begin )), \"limit\": $limit}" >> "$STEPS_FILE"
    echo "[gpu_check] $name: $status"
    [ "$status" = passed ]
}

# 1. the kit, gsplat's extension, versions
nvidia-smi 2>/dev/null | head -15
step install-kit 120 bash benchmarks/gpu/install_kit.sh "$KIT"
# gsplat links its JIT build with -lcudart; a CUDA from NVIDIA's wheels may hold only libcudart.so.13.
CUDART="$("$PYTHON" -c 'import nvidia, glob; print(next(iter(glob.glob(nvidia.__path__[0] + "/*/lib/libcudart.so.*")), ""))' 2>/dev/null)"
[ -n "$CUDART" ] && mkdir -p "$WORK/lib" && ln -sf "$CUDART" "$WORK/lib/libcudart.so" && export LIBRARY_PATH="$WORK/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
step gsplat-extension 330 "$PYTHON" benchmarks/gpu/gsplat_check.py --out "$OUT/versions.json"

# 2. our rasterisers against gsplat's kernels
step test-rasterizer-cuda 120 "$PYTHON" -m pytest tests/test_rasterizer_cuda.py -q -p no:cacheprovider -p no:xdist -rs
step rasterizer-diffs 90 "$PYTHON" benchmarks/gpu/rasterizer_diffs.py --out "$OUT/rasterizer_cuda.json"

# 3. every method, short runs on the demo scene
if [ "$DEVICE" = cuda ]; then STEPS=300 PARALLEL=4; else STEPS=30 PARALLEL=1; fi
step methods 240 "$PYTHON" benchmarks/gpu/run_methods.py --device "$DEVICE" --steps "$STEPS" \
    --parallel "$PARALLEL" --train-limit "$TRAIN_LIMIT" --eval-limit "$EVAL_LIMIT" --momentum-grids 2x2 \
    --deadline $(( 225 * SLOW )) --runs "$WORK/demo" --out "$OUT/methods.json"

# 4. lego at 400 px, with the time left
if [ "$DEVICE" = cuda ]; then LEGO_STEPS=2000 MOMENTUM_STEPS=300; else LEGO_STEPS=20 MOMENTUM_STEPS=8; fi
if [ -f "$LEGO/transforms.json" ]; then
    SCENE="$LEGO"
elif [ -f "$LEGO/transforms_train.json" ]; then
    SCENE="$WORK/lego400"
    step lego-scene 60 "$PYTHON" scripts/make_demo_scene.py "$LEGO" --size 400 --out "$SCENE"
fi
if [ -n "${SCENE:-}" ]; then
    # teacher and student first; momentum-gs's memory with 1 and 4 blocks (ns-train only) in the last minute
    step lego-teacher-student $(( $(left) - 70 )) "$PYTHON" benchmarks/gpu/run_methods.py --device "$DEVICE" \
        --data "$SCENE" --methods teacher student --steps "$LEGO_STEPS" --render-fps --train-limit "$(( $(left) - 80 ))" \
        --eval-limit "$EVAL_LIMIT" --deadline $(( $(left) - 75 )) --runs "$WORK/lego" --out "$OUT/lego.json"
    step lego-momentum-blocks $(( $(left) - 5 )) "$PYTHON" benchmarks/gpu/run_methods.py --device "$DEVICE" \
        --data "$SCENE" --methods momentum-gs --momentum-grids 1x1 2x2 --steps "$MOMENTUM_STEPS" --train-only \
        --train-limit "$TRAIN_LIMIT" --deadline $(( $(left) - 10 )) --runs "$WORK/lego_momentum" --out "$OUT/lego_momentum.json"
else
    echo "[gpu_check] lego: no scene at $LEGO (neither a 400 px copy nor the raw NeRF-synthetic lego); skipped"
    echo '{"step": "lego", "status": "skipped", "seconds": 0, "limit": 0}' >> "$STEPS_FILE"
fi

"$PYTHON" - "$STEPS_FILE" "$OUT/summary.json" "$DEVICE" $(( $(date +%s) - START )) <<'PY'
import json, sys
steps = [json.loads(line) for line in open(sys.argv[1])]
summary = {"device": sys.argv[3], "dry_run": sys.argv[3] != "cuda", "seconds": int(sys.argv[4]), "steps": steps}
open(sys.argv[2], "w").write(json.dumps(summary, indent=2))
for s in steps:
    print(f"[gpu_check] {s['step']:>22}: {s['status']:>7} ({s['seconds']} s of {s['limit']})")
PY
rm -rf "$WORK"
echo "[gpu_check] done in $(( $(date +%s) - START )) s; results in $OUT"

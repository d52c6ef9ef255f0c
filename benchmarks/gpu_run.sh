#!/usr/bin/env bash
# The prepared device check of the batched CUDA eigensolvers (about 7 minutes on an H200).
# Run from the repository root on the machine with the GPU:
#     bash benchmarks/gpu_run.sh [OUT_DIR]          (default: gpu_run_out, or $OUT/gpu_run)
# Needs torch with CUDA and numpy (pytest optional). Steps:
#   1. the machine (nvidia-smi, torch, CUDA);
#   2. a smoke run of each cuSOLVER routine in its own process: a routine that crashes the
#      process is excluded from what follows (CONVAUDIT_EIGENSOLVER forces the next one);
#   3. benchmarks/gpu_check.py: correctness of every backend, ResNet-50 CUDA vs 2 CPU cores;
#   4. the GPU-marked tests of the eigensolvers, if pytest is installed and time is left.
# Everything is written under OUT_DIR; the summary table ends gpu_check.txt.
set -u
OUT_DIR=${1:-${OUT:+$OUT/gpu_run}}
OUT_DIR=${OUT_DIR:-gpu_run_out}
PY=${PYTHON:-python3}
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$SECONDS

{
    nvidia-smi 2>&1 | head -20
    $PY -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda,
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"
} | tee "$OUT_DIR/machine.txt"

declare -A rc
for backend in cusolver-syevBatched cusolver-heevjBatched; do
    timeout 90 $PY benchmarks/gpu_check.py --smoke "$backend" 2>&1 | tail -3 | tee -a "$OUT_DIR/smoke.txt"
    rc[$backend]=${PIPESTATUS[0]}
    echo "smoke $backend: exit ${rc[$backend]}" | tee -a "$OUT_DIR/smoke.txt"
done
bad() { [ "${rc[$1]}" -eq 1 ] || [ "${rc[$1]}" -ge 124 ]; }  # wrong values, timed out or crashed
forced=""
if bad cusolver-syevBatched; then
    if [ "${rc[cusolver-heevjBatched]}" -eq 0 ]; then forced=cusolver-heevjBatched; else forced=torch-eigvalsh; fi
elif [ "${rc[cusolver-syevBatched]}" -ne 0 ] && bad cusolver-heevjBatched; then
    forced=torch-eigvalsh
fi
if [ -n "$forced" ]; then
    echo "a cuSOLVER routine failed its smoke run: CONVAUDIT_EIGENSOLVER=$forced" | tee -a "$OUT_DIR/smoke.txt"
    export CONVAUDIT_EIGENSOLVER=$forced
fi

timeout 400 $PY benchmarks/gpu_check.py --out "$OUT_DIR" --budget 360 2>&1 | tee "$OUT_DIR/gpu_check.txt"

left=$((470 - (SECONDS - start)))
if $PY -c "import pytest" 2>/dev/null && [ "$left" -gt 30 ]; then
    timeout "$left" $PY -m pytest -q -m gpu -p no:cacheprovider \
        tests/engine/test_eigensolvers_gpu.py tests/engine/test_gpu.py 2>&1 | tail -25 | tee "$OUT_DIR/pytest_gpu.txt"
else
    echo "GPU tests not run (pytest missing or ${left}s left)" | tee "$OUT_DIR/pytest_gpu.txt"
fi
echo "gpu_run.sh: $((SECONDS - start)) s" | tee -a "$OUT_DIR/gpu_check.txt"

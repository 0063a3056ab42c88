#!/usr/bin/env bash
# GPU check (issue 6): run from the repository root on a machine with an NVIDIA GPU, CuPy,
# torch (CUDA) and jax installed.  Offline machines: bring array-api-compat (and
# array-api-strict, hypothesis, mpmath, pytest if missing) as wheels in ./.whl/.
# Writes logs, JSON and a markdown table to ${OUT:-benchmarks/results/gpu}.
set -uo pipefail
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
if [ -d .whl ]; then python -m pip install -q --no-index --find-links .whl array-api-compat array-api-strict hypothesis mpmath pytest 2>&1 | tail -2; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
date -u +%Y-%m-%dT%H:%MZ >> "$OUT/device.txt"
status=0
# 1. The whole suite on CuPy and on torch CUDA (float64 and float32 cases are inside the suite).
XDERIV_BACKEND=cupy XDERIV_HYPOTHESIS_EXAMPLES=25 timeout 900 python -m pytest tests -q -x -p no:cacheprovider 2>&1 | tee "$OUT/tests-cupy.log" | tail -3 || status=1
XDERIV_BACKEND=torch XDERIV_DEVICE=cuda XDERIV_HYPOTHESIS_EXAMPLES=25 timeout 900 python -m pytest tests -q -x -p no:cacheprovider -s -k "not examples" 2>&1 | tee "$OUT/tests-torch-cuda.log" | tail -3 || status=1
# 2. GPU timings: xderiv on CuPy and torch CUDA against torch.func and jax on the same GPU.
for dtype in float32 float64; do
  timeout 600 python benchmarks/gpu_bench.py --device cuda --dtype "$dtype" --out "$OUT" 2>&1 | tail -40 || status=1
done
exit $status

#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, CuPy and torch (CUDA): xderiv on CuPy and torch-CUDA against torch.func,
# hessQuik and jax on the same GPU (P2, P4, P1 d=1024 n=10).  Run from the repository root; extra
# arguments go to pytest.  Writes JSON, results.md and logs to ${OUT:-benchmarks/results/gpu}.
set -uo pipefail
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
for dtype in float32 float64; do
  python -m pytest benchmarks/test_bench.py -q -p no:cacheprovider --device cuda --dtype "$dtype" \
    -k "P2 or P4 or d1024_n10-" --benchmark-json "$OUT/bench_${dtype}_cuda.json" "$@" 2>&1 | tail -5 | tee "$OUT/$dtype.log"
done
python benchmarks/report.py "$OUT"/bench_*_cuda.json --out "$OUT"

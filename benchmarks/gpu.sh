#!/usr/bin/env bash
# The GPU check, sized for ten minutes of GPU time: the CuPy and torch-CUDA test suites side by side,
# then xderiv against its peers on the same GPU (benchmarks/problems.py: gpu_problems), float32 and
# float64, every path: xderiv on torch eager and CuPy eager in each mode, xd.compile on torch
# (torch.compile + CUDA-graph replay) and on jax (jax.jit), folx, jax.hessian, torch.func, hessQuik.
# Every result is checked against xderiv's float64 NumPy answer before it is timed.
#
#   bash benchmarks/gpu.sh            # on a machine with an NVIDIA GPU, from the repository root
#   bash benchmarks/gpu.sh --cpu      # dry run on a CPU: torch-CPU suite, quick problems, --device cpu
#
# Writes device.txt, the test logs, bench_<dtype>_<device>.json, results.md and plots to
# ${OUT:-benchmarks/results/gpu}.  Each step has its own time limit (TESTS_S, BENCH_S seconds).
set -uo pipefail
OUT=${OUT:-benchmarks/results/gpu}
TESTS_S=${TESTS_S:-200}
BENCH_S=${BENCH_S:-180}
DEVICE=cuda
EXTRA=()
if [[ "${1:-}" == "--cpu" ]]; then
  DEVICE=cpu
  EXTRA=(--quick)
  shift
fi
mkdir -p "$OUT"
start=$(date +%s)
if [[ $DEVICE == cuda ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
else
  echo "dry run on the CPU: $(python -c 'import platform; print(platform.processor() or platform.machine())')" | tee "$OUT/device.txt"
fi

# 1. The test suites, in parallel (with pytest-xdist workers where it is installed).
WORKERS=()
python -c "import xdist" 2>/dev/null && WORKERS=(-n 4)
suite() {  # suite NAME ENV...
  local name=$1; shift
  env "$@" timeout "$TESTS_S" python -m pytest tests -q -p no:cacheprovider "${WORKERS[@]}" >"$OUT/tests-$name.log" 2>&1
  echo "tests-$name: exit $? ($(tail -n 1 "$OUT/tests-$name.log"))"
}
if [[ $DEVICE == cuda ]]; then
  suite cupy XDERIV_BACKEND=cupy &
  suite torch-cuda XDERIV_BACKEND=torch XDERIV_DEVICE=cuda &
else
  suite torch-cpu XDERIV_BACKEND=torch &
fi
wait

# 2. The comparison.
for dtype in float32 float64; do
  timeout "$BENCH_S" python -m pytest benchmarks/test_bench.py -q -p no:cacheprovider --problems gpu \
    --device "$DEVICE" --dtype "$dtype" --threads 0 "${EXTRA[@]}" \
    --benchmark-json "$OUT/bench_${dtype}_${DEVICE}.json" "$@" >"$OUT/bench-$dtype.log" 2>&1
  echo "bench $dtype: exit $? ($(tail -n 1 "$OUT/bench-$dtype.log"))"
done
python benchmarks/report.py "$OUT"/bench_*_"$DEVICE".json --out "$OUT"
echo "gpu.sh: $(( $(date +%s) - start )) s in all; results in $OUT"

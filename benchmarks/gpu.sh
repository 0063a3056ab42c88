#!/usr/bin/env bash
# The GPU check (about ten minutes of GPU time): the CuPy and torch-CUDA test suites side by side, then the family
# "gpu" of benchmarks/test_bench.py in float32 and float64, every path checked before it is timed; from the
# repository root.  --cpu: a dry run on a CPU (torch-CPU suite, quick problems).  Writes device.txt, the logs,
# gpu_<dtype>.json and a speed page of its own (page/) to $OUT (default benchmarks/results/gpu, dry run /tmp/xderiv-gpu);
# make_performance_page.py then puts the run on the manual's page.  Time limits per step: TESTS_S, BENCH_S seconds.
set -uo pipefail
DEVICE=cuda EXTRA=()
[[ "${1:-}" == "--cpu" ]] && DEVICE=cpu EXTRA=(--quick) && shift
[[ $DEVICE == cuda ]] && OUT=${OUT:-benchmarks/results/gpu} || OUT=${OUT:-/tmp/xderiv-gpu}
mkdir -p "$OUT" && start=$(date +%s)
if [[ $DEVICE == cuda ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
else
  echo "dry run on the CPU: $(uname -m)" | tee "$OUT/device.txt"
fi
WORKERS=() && python -c "import xdist" 2>/dev/null && WORKERS=(-n 4)
suite() { # suite NAME ENV...: the test suite under one backend
  local name=$1 && shift
  env "$@" timeout "${TESTS_S:-200}" python -m pytest tests -q -p no:cacheprovider "${WORKERS[@]}" >"$OUT/tests-$name.log" 2>&1
  echo "tests-$name: exit $? ($(tail -n 1 "$OUT/tests-$name.log"))"
}
if [[ $DEVICE == cuda ]]; then
  suite cupy XDERIV_BACKEND=cupy & suite torch-cuda XDERIV_BACKEND=torch XDERIV_DEVICE=cuda &
else
  suite torch-cpu XDERIV_BACKEND=torch &
fi
wait
for dtype in float32 float64; do
  timeout "${BENCH_S:-180}" python -m pytest benchmarks/test_bench.py -q -p no:cacheprovider --family gpu --threads 0 \
    --device "$DEVICE" --dtype "$dtype" "${EXTRA[@]}" --benchmark-json "$OUT/gpu_$dtype.json" "$@" >"$OUT/bench-$dtype.log" 2>&1
  echo "bench $dtype: exit $? ($(tail -n 1 "$OUT/bench-$dtype.log"))"
done
python benchmarks/make_performance_page.py --results "$OUT" --docs "$OUT/page"
echo "gpu.sh: $(($(date +%s) - start)) s in all; results in $OUT"

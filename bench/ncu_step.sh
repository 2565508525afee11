#!/usr/bin/env bash
# Kernel time of one training step, by kernel (the machine has Nsight Compute but no Nsight Systems):
# every kernel of a short `dtrn bench` run is timed alone under ncu (gpu__time_duration), and
# bench/ncu_step.py sums the last whole step's kernels by name (and lists them in launch order, with
# their grid sizes, in ncu-LAYOUT-sequence.txt). Against the step time that dtrn bench
# measures without the profiler, the difference is time the GPU waited (launch gaps, host reads) or
# ran below the boost clock that ncu times kernels at (the clocks stage of gpu_suite.sh).
# Usage on the GPU machine, after a build: bash bench/ncu_step.sh   (LAYOUTS, SEQ, BATCH; writes $OUT)
set -uo pipefail
export PATH="/opt/torch/.venv/bin:/usr/local/cuda/bin:$PATH"
OUT="${OUT:-$PWD/gpu-out}"
BUILD="${BUILD:-build-gpu}"
SEQ="${SEQ:-2048}"
BATCH="${BATCH:-8}"
for layout in ${LAYOUTS:-dense bilayer}; do
  extra=(); [[ $layout == bilayer ]] && extra=(--routed-fraction 0.1)
  args=(bench --config deploy/configs/360m.yaml --set "train.micro_batch=$BATCH" --set "train.global_batch=$BATCH"
        --set "model.seq_len=$SEQ" --set "model.layout=$layout" "${extra[@]}")
  "$BUILD/bin/dtrn" "${args[@]}" --steps 10 --warmup 3 >"$OUT/ncu-$layout-bench.txt" 2>&1
  timeout 400 ncu --csv --print-units base --cache-control none --clock-control none --metrics gpu__time_duration.sum,launch__grid_size \
    "$BUILD/bin/dtrn" "${args[@]}" --steps 2 --warmup 1 >"/tmp/ncu-$layout.csv" 2>"$OUT/ncu-$layout.err"
  python3 bench/ncu_step.py "/tmp/ncu-$layout.csv" "$OUT/ncu-$layout-sequence.txt" >"$OUT/ncu-$layout.txt" 2>&1
  grep -E "step ms|tokens/s" "$OUT/ncu-$layout-bench.txt" | head -3
  head -30 "$OUT/ncu-$layout.txt"
done

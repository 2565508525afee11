#!/usr/bin/env bash
# Nsight Compute on the tensor-core attention kernels at 8 x 2048, H 15 / G 5, D 64 (attention_bench's
# first case, and the wgmma backward's first case, the same shape): speed of light, pipe utilisation,
# warp stalls, shared memory. Needs a built build-gpu.
# Usage on the GPU machine: bash bench/ncu_attention.sh   (writes $OUT/ncu_attention.txt)
set -uo pipefail
export PATH="/opt/torch/.venv/bin:/usr/local/cuda/bin:$PATH"
OUT="${OUT:-$PWD/gpu-out}"
for kernel in tc_forward_kernel tc_dq_kernel tc_dkdv_kernel wgmma_dq_kernel wgmma_dkdv_kernel; do
  ncu --kernel-name "regex:${kernel}" --launch-skip 3 --launch-count 1 \
    --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats \
    --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats --section InstructionStats \
    build-gpu/bin/attention_bench 2>&1 | grep -v "^==PROF==" | sed -n '/attention_bench/,$p' | head -150
done > "$OUT/ncu_attention.txt"

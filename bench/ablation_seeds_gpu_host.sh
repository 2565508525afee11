#!/usr/bin/env bash
# Runs the beta sweep of bench/routing_ablation.sh for two more seeds in parallel on a many-core host
# (the GPU machine's 16 CPU cores; the runs use the CPU backend). Tables go to $OUT/seed2.md, seed3.md.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/torch/.venv/bin:/usr/local/cuda/bin:$PATH"
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
pkg-config --exists libpcre2-8 2>/dev/null || for deb in .deps/libpcre2-dev_*.deb; do dpkg -x "$deb" /; done
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DDTRN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null &&
  cmake --build build-gpu --target dtrn -j "$(nproc)" >/dev/null || exit 1
for seed in 2 3; do
  RUNSET=beta SEED=$seed JOBS=4 THREADS=2 bash bench/routing_ablation.sh build-gpu /tmp/ablation >"$OUT/seed$seed.md" 2>&1 &
done
wait
cat "$OUT"/seed*.md

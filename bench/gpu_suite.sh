#!/usr/bin/env bash
# gpu_suite.sh: configure, build and test dtrn with the CUDA backend, then benchmark its matrix products,
# in one call on the GPU machine (see shared/gpu-machine.md). Logs land in $OUT (the device tool's return
# folder; ./gpu-out when unset): configure.log, build.log, runtime_tests.log, gemm_bench.log, summary.txt.
#
#   bash bench/gpu_suite.sh
#   EXTRA_CMAKE_ARGS="-DDTRN_BUILD_DATA=OFF" BUILD_TARGETS=all bash bench/gpu_suite.sh
#
# The CUDA tests run first and separately, so their result survives a slow or failing CPU suite. The
# script never stops early on a failure: every step runs, and the summary says what failed.
set -uo pipefail
cd "$(dirname "$0")/.."

export PATH="/opt/torch/.venv/bin:/usr/local/cuda/bin:$PATH"  # cmake 4 and ninja live in the venv there
OUT="${OUT:-$PWD/gpu-out}"
BUILD="${BUILD:-build-gpu}"
JOBS="${JOBS:-$(nproc)}"
EXTRA_CMAKE_ARGS="${EXTRA_CMAKE_ARGS:-}"
BUILD_TARGETS="${BUILD_TARGETS:-runtime_tests gemm_bench}"  # "all" builds everything
TEST_TIMEOUT="${TEST_TIMEOUT:-420}"                         # seconds, both test runs together
mkdir -p "$OUT"

# The GPU machine has no PCRE2 headers (the data module's reference pre-tokenizer needs them): unpack the
# Debian package carried in .deps/ (fetched here with `apt-get download libpcre2-dev`). Its runtime
# library, libpcre2-8.so.0, is already there.
if ! pkg-config --exists libpcre2-8 2>/dev/null; then
  for deb in .deps/libpcre2-dev_*.deb; do [[ -f "$deb" ]] && dpkg -x "$deb" /; done
fi

step() { echo "== $*"; }
status=()

step "gpu"
{ command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "no nvidia-smi"; } 2>&1 |
  tee "$OUT/gpu.txt"

# CMAKE_CUDA_STANDARD=17: the .cu files are C++17 by design (cuda/elementwise.h); without it CMake
# derives CUDA20 from the C++ standard, which older CMake cannot pass to nvcc.
step "configure ($BUILD) $EXTRA_CMAKE_ARGS"
# shellcheck disable=SC2086
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDTRN_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_CUDA_STANDARD=17 $EXTRA_CMAKE_ARGS >"$OUT/configure.log" 2>&1
rc=$?; status+=("configure rc=$rc"); tail -3 "$OUT/configure.log"

step "build: $BUILD_TARGETS"
targets=()
if [[ "$BUILD_TARGETS" != "all" ]]; then
  for t in $BUILD_TARGETS; do targets+=(--target "$t"); done
fi
start=$SECONDS
cmake --build "$BUILD" -j "$JOBS" "${targets[@]}" >"$OUT/build.log" 2>&1
rc=$?; status+=("build rc=$rc ($((SECONDS - start)) s)")
grep -E "error|FAILED" "$OUT/build.log" | head -20

tests="$BUILD/tests/runtime_tests"
log="$OUT/runtime_tests.log"
: >"$log"
if [[ -x "$tests" ]]; then
  step "runtime_tests: CUDA tests"
  start=$SECONDS
  timeout "$TEST_TIMEOUT" "$tests" --gtest_color=no --gtest_filter='Cuda*' 2>&1 | tee -a "$log" |
    grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]"
  rc=${PIPESTATUS[0]}; status+=("cuda tests rc=$rc ($((SECONDS - start)) s)")
  step "runtime_tests: all other tests"
  left=$((TEST_TIMEOUT - (SECONDS - start))); ((left < 30)) && left=30
  timeout "$left" "$tests" --gtest_color=no --gtest_filter='-Cuda*' >>"$log" 2>&1
  rc=$?; status+=("other runtime tests rc=$rc ($((SECONDS - start)) s)")
else
  status+=("runtime_tests not built")
fi

bench="$BUILD/bin/gemm_bench"
if [[ -x "$bench" ]]; then
  step "gemm_bench"
  timeout 120 "$bench" 2>&1 | tee "$OUT/gemm_bench.log"
  rc=${PIPESTATUS[0]}; status+=("gemm_bench rc=$rc")
else
  status+=("gemm_bench not built")
fi
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  step "peer: torch.matmul at the same products"
  timeout 120 python3 bench/peer_gemm.py 2>&1 | tee -a "$OUT/gemm_bench.log"
fi

# Module suites that need no corpus beyond what a run carries (train_tests needs
# .assets/tokenizer and two books: .assets/corpus/gutenberg/{blake-poems,burgess-busterbrown}.txt).
for suite in model_tests train_tests; do
  if [[ -x "$BUILD/tests/$suite" ]]; then
    step "$suite"
    timeout 300 "$BUILD/tests/$suite" --gtest_color=no >>"$OUT/suites.log" 2>&1
    rc=$?; status+=("$suite rc=$rc: $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/suites.log" | tail -1)")
  fi
done

if [[ -x "$BUILD/bin/dtrn" && -d .assets/tokenizer ]]; then
  step "device selection: train.device auto and cuda on this GPU"
  tmp=$(mktemp -d)
  mkdir -p "$tmp/corpus"
  cp README.md "$tmp/corpus/readme.txt"
  cp docs/data.md "$tmp/corpus/data.txt"
  "$BUILD/bin/dtrn" prep --input "$tmp/corpus" --out "$tmp/prep" --val-docs data --tokenizer-dir .assets/tokenizer >/dev/null
  for dev in auto cuda; do
    timeout 120 "$BUILD/bin/dtrn" train --config deploy/configs/tiny.yaml --set "data.path=$tmp/prep" \
      --set model.seq_len=64 --set train.steps=2 --set train.warmup_steps=0 --set train.eval_every=0 --set "train.device=$dev" \
      --run-dir "$tmp/run-$dev" 2>&1 | head -4 | tee -a "$OUT/interop.log"
  done
  rm -rf "$tmp"
fi

if [[ -x "$BUILD/bin/dtrn" && -d .assets/tokenizer ]] && python3 -c 'import transformers' 2>/dev/null; then
  step "Hugging Face parity of dtrn export"
  timeout 300 bash tests/interop/run_hf_parity.sh "$BUILD" 2>&1 | tee -a "$OUT/interop.log"
  rc=${PIPESTATUS[0]}; status+=("hf parity rc=$rc: $(grep parity: "$OUT/interop.log" | tail -1)")
fi

{
  echo "== summary ($(head -1 "$OUT/gpu.txt"))"
  printf '%s\n' "${status[@]}"
  if [[ -s "$log" ]]; then
    result='^\[ +(OK|FAILED|SKIPPED) +\] [A-Za-z0-9_/]+\.[A-Za-z0-9_/]+ \('
    count() { grep -E "$result" "$log" | grep -c "^\[ *$1 *\]"; }
    echo "runtime_tests: $(count OK) passed, $(count FAILED) failed, $(count SKIPPED) skipped"
    grep -E "$result" "$log" | grep '^\[  FAILED' | sed 's/^/  /'
  fi
  [[ -s "$OUT/gemm_bench.log" ]] && grep -E "TFLOP|^square|^360M|allocator" "$OUT/gemm_bench.log"
} | tee "$OUT/summary.txt"

#!/usr/bin/env bash
# gpu_suite.sh: everything dtrn does on the GPU machine, in one call (see shared/gpu-machine.md): build
# with the CUDA backend, run every GPU test, benchmark training beside the PyTorch peers, train the 360m
# preset on the corpus. Logs land in $OUT (the device tool's return folder; ./gpu-out when unset).
#
#   STAGES="build tests" bash bench/gpu_suite.sh        # the default
#   STAGES="build bench peers" bash bench/gpu_suite.sh  # bench/RESULTS.md's training table
#   STAGES="build train" bash bench/gpu_suite.sh        # 360m bilayer on the corpus
#   STAGES="build attn" bash bench/gpu_suite.sh         # attention kernels beside torch SDPA
#     (ATTN_AB="DTRN_ATTENTION_LEAD=0 DTRN_ATTENTION_LEAD=0.333" times the defaults under each setting)
#   STAGES="build gemm" bash bench/gpu_suite.sh         # gemm_bench (the router's products: skinny_gemm.cu
#                                                       # beside cuBLASLt), and the bilayer step with each
#   STAGES="build membw" bash bench/gpu_suite.sh        # memory_bench: AdamW, the gradient norm and RMSNorm
#                                                       # in GB/s beside a device-to-device copy
#   STAGES="build capacity" bash bench/gpu_suite.sh     # the largest micro-batch of the 360m preset
#   STAGES="build profile" bash bench/gpu_suite.sh      # Nsight Compute: a step's kernel time by kernel
#   STAGES="build clocks" bash bench/gpu_suite.sh       # the SM clock and power while the bilayer trains at
#                                                       # 2 x 8192 (ncu times kernels from idle, at boost)
#   STAGES="variants" bash bench/gpu_suite.sh           # bench/variants/*.cu: standalone copies of kernels in
#                                                       # the forms compared (RoPE's angles, bf16 rounding,
#                                                       # SwiGLU's sigmoid); needs no build
#   STAGES="build ckpt" bash bench/gpu_suite.sh         # what a checkpoint save costs 360m training;
#     on a CPU: BUILD=build CKPT_CONFIG=deploy/configs/tiny.yaml CKPT_STEPS=12 CKPT_EVERY=4 STAGES=ckpt ...
#   STAGES="build demo" bash bench/gpu_suite.sh         # `make demo`'s job as it runs on a GPU machine
#   STAGES="build parallel" bash bench/gpu_suite.sh     # 2+ GPUs: NCCL tests, all-reduce busBW, DP and TP scaling
#     (DP_BUCKETS="25 100" compares gradient bucket sizes)
#   STAGES="build routing" bash bench/gpu_suite.sh      # the routing-control ablation (docs/routing-loss.md);
#                                                       # repeat until its log says "all runs done"
#
# The device call carries .assets/tokenizer, .assets/corpus (the tests' and the train stage's data),
# .deps (libpcre2-dev, which the machine lacks) and .peer (a copy of ../shared/peer, which does not travel).
# Every stage runs even when an earlier one failed; the summary at the end says what failed.
set -uo pipefail
cd "$(dirname "$0")/.."

export PATH="/opt/torch/.venv/bin:/usr/local/cuda/bin:$PATH"  # cmake 4 and ninja live in the venv there
export NCCL_NVLS_ENABLE=0
OUT="${OUT:-$PWD/gpu-out}"
BUILD="${BUILD:-build-gpu}"
JOBS="${JOBS:-$(nproc)}"
STAGES="${STAGES:-build tests}"
TEST_FILTER="${TEST_FILTER:-*}"
TEST_TIMEOUT="${TEST_TIMEOUT:-400}"  # per suite; a barrier mistake in a kernel hangs rather than fails
BENCH_STEPS="${BENCH_STEPS:-20}"
TRAIN_STEPS="${TRAIN_STEPS:-200}"
CKPT_CONFIG="${CKPT_CONFIG:-deploy/configs/360m.yaml}"
CKPT_STEPS="${CKPT_STEPS:-240}"
CKPT_EVERY="${CKPT_EVERY:-80}"
mkdir -p "$OUT"
status=()
has() { [[ " $STAGES " == *" $1 "* ]]; }
step() { echo "== $*"; }

if ! pkg-config --exists libpcre2-8 2>/dev/null; then
  for deb in .deps/libpcre2-dev_*.deb; do [[ -f "$deb" ]] && dpkg -x "$deb" /; done
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || echo "no nvidia-smi"; } |
  tee "$OUT/gpu.txt"

if has build; then
  step "build"
  start=$SECONDS
  # CMAKE_CUDA_STANDARD=17: the .cu files are C++17 by design (cuda/elementwise.h).
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDTRN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DCMAKE_CUDA_STANDARD=17 >"$OUT/build.log" 2>&1 && cmake --build "$BUILD" -j "$JOBS" >>"$OUT/build.log" 2>&1
  rc=$?; status+=("build rc=$rc ($((SECONDS - start)) s)")
  grep -E "error|FAILED" "$OUT/build.log" | head -20
fi

if has tests; then
  for suite in runtime_tests model_tests train_tests; do
    filter="$TEST_FILTER"
    [[ $suite == runtime_tests && $filter == "*" ]] && filter='Cuda*'
    [[ $suite == train_tests && $filter == "*" ]] && filter='GpuTrainer*'
    step "$suite --gtest_filter=$filter"
    start=$SECONDS
    timeout "$TEST_TIMEOUT" "$BUILD/tests/$suite" --gtest_color=no --gtest_filter="$filter" >"$OUT/$suite.log" 2>&1
    rc=$?
    ok=$(grep -c '^\[       OK \]' "$OUT/$suite.log"); bad=$(grep -c '^\[  FAILED  \] [A-Za-z]' "$OUT/$suite.log")
    skip=$(grep -c '^\[  SKIPPED \] [A-Za-z].*(' "$OUT/$suite.log")
    status+=("$suite rc=$rc: $ok passed, $bad failed, $skip skipped ($((SECONDS - start)) s)")
    grep -E '^\[  FAILED  \] [A-Za-z].*\(' "$OUT/$suite.log" | sed 's/^/  /'
  done
fi

if has attn; then
  step "attention: dtrn's kernels beside torch SDPA"
  timeout 180 "$BUILD/bin/attention_bench" 2>&1 | tee "$OUT/attention_bench.log"
  PYTHONUNBUFFERED=1 timeout 180 python3 bench/peer_attention.py 2>&1 | tee -a "$OUT/attention_bench.log"
  # ATTN_AB="NAME=value ...": the default kernels again under each setting (A/B of a tuning variable).
  for setting in ${ATTN_AB:-}; do
    step "attention_bench, default kernels, $setting"
    env "$setting" timeout 120 "$BUILD/bin/attention_bench" 2>&1 | grep -E "^case| auto +auto " |
      sed "s/^/$setting  /" | tee -a "$OUT/attention_bench.log"
  done
fi

dtrn="$BUILD/bin/dtrn"
if has gemm; then
  step "gemm_bench; the 360m bilayer step at 2 x 8192 (r=0.1) with the skinny products and with cuBLASLt for all"
  timeout 180 "$BUILD/bin/gemm_bench" 2>&1 | tee "$OUT/gemm_bench.log"
  status+=("gemm_bench rc=${PIPESTATUS[0]}")
  for skinny in 1 0; do
    DTRN_SKINNY_GEMM=$skinny timeout 240 "$dtrn" bench --config deploy/configs/360m.yaml --set train.micro_batch=2 \
      --set model.seq_len=8192 --set model.layout=bilayer --steps "$BENCH_STEPS" --json --routed-fraction 0.1 \
      2>&1 | sed "s/^/DTRN_SKINNY_GEMM=$skinny /" | tee -a "$OUT/gemm_step.log"
    status+=("bench bilayer 2x8192 DTRN_SKINNY_GEMM=$skinny rc=${PIPESTATUS[0]}")
  done
fi

if has membw; then
  step "memory_bench: the optimizer and RMSNorm kernels against the GPU's bandwidth"
  timeout 180 "$BUILD/bin/memory_bench" 2>&1 | tee "$OUT/memory_bench.log"
  status+=("memory_bench rc=${PIPESTATUS[0]}")
fi

if has bench; then
  step "dtrn bench: 360m shapes, bf16, dense and bilayer r=0.1, 8 x 2048 and 2 x 8192"
  for shape in "8 2048" "2 8192"; do
    set -- $shape
    for layout in dense bilayer; do
      extra=(); [[ $layout == bilayer ]] && extra=(--routed-fraction 0.1)
      timeout 240 "$dtrn" bench --config deploy/configs/360m.yaml --set "train.micro_batch=$1" \
        --set "model.seq_len=$2" --set "model.layout=$layout" --steps "$BENCH_STEPS" --json "${extra[@]}" \
        2>&1 | tee -a "$OUT/bench.jsonl"
      status+=("bench $layout $1x$2 rc=${PIPESTATUS[0]}")
    done
  done
fi

if has profile; then
  step "profile: kernel time of a step by kernel (Nsight Compute; 360m, dense and bilayer r=0.1, 8 x 2048)"
  OUT="$OUT" BUILD="$BUILD" bash bench/ncu_step.sh
  status+=("profile done")
fi

if has variants; then
  for src in bench/variants/*.cu; do
    name=$(basename "$src" .cu)
    step "variants: $name"
    if nvcc -O3 -arch=sm_90 -std=c++17 "$src" -o "/tmp/$name" >"$OUT/variants-$name.log" 2>&1; then
      timeout 120 "/tmp/$name" >>"$OUT/variants-$name.log" 2>&1
      rc=$?
    else
      rc="build failed"
    fi
    cat "$OUT/variants-$name.log"
    status+=("variants $name rc=$rc")
  done
fi

if has clocks; then
  # The profile stage's kernel times come from kernels run one at a time from an idle GPU; a sustained
  # run may hold a lower clock. nvidia-smi samples the clocks (c) and power (p) once a second meanwhile.
  step "clocks: SM clock and power during dtrn bench (360m bilayer, 2 x 8192, r=0.1, 30 steps)"
  nvidia-smi dmon -s pc -d 1 >"$OUT/dmon.log" 2>&1 &
  dmon=$!
  timeout 240 "$dtrn" bench --config deploy/configs/360m.yaml --set train.micro_batch=2 --set model.seq_len=8192 \
    --set model.layout=bilayer --routed-fraction 0.1 --steps 30 2>&1 | grep -E "^step|^compute" | tee "$OUT/clocks.txt"
  kill "$dmon" 2>/dev/null
  cat "$OUT/dmon.log" | tee -a "$OUT/clocks.txt"
  status+=("clocks done")
fi

if has capacity; then
  step "capacity: the largest micro-batch of the 360m preset (bilayer, bf16) at 2048 and 8192"
  for shape in "${CAPACITY_2048:-2048 64 60 56 52 48}" "${CAPACITY_8192:-8192 16 15 14 13 12}"; do
    set -- $shape
    seq=$1; shift
    for b in "$@"; do
      if timeout 120 "$dtrn" bench --config deploy/configs/360m.yaml --set "train.micro_batch=$b" --set "train.global_batch=$b" \
          --set "model.seq_len=$seq" --steps 1 --warmup 1 --routed-fraction 0.1 --json >>"$OUT/capacity.jsonl" 2>&1; then
        echo "largest micro-batch at $seq: $b"; status+=("capacity $seq: $b"); break
      fi
      echo "micro-batch $b at $seq does not fit"
    done
  done
fi

if has ckpt; then
  # The saves are CKPT_EVERY steps apart so that, as in a real run (checkpoint.every 500), a save's write
  # has finished before the next save: a save's blocked time is then its snapshot alone. A shorter gap
  # (CKPT_EVERY=4) measures the wait for the previous write instead.
  # The config's own shape and precision: 360m is bilayer, bf16 on a GPU, micro-batch 8 at seq 2048.
  step "checkpoint saves during training: $CKPT_CONFIG, r=0.1, a save every $CKPT_EVERY of $CKPT_STEPS steps"
  ckdir=/tmp/dtrn-ckpt-bench
  rm -rf "$ckdir"
  timeout 480 "$dtrn" bench --config "$CKPT_CONFIG" --routed-fraction 0.1 --steps "$CKPT_STEPS" \
    --checkpoint-every "$CKPT_EVERY" --checkpoint-dir "$ckdir" --json >"$OUT/ckpt_bench.json" 2>"$OUT/ckpt_bench.log"
  status+=("ckpt bench rc=$?")
  "$dtrn" ckpt verify "$ckdir" >>"$OUT/ckpt_bench.log" 2>&1
  status+=("ckpt verify rc=$?")
  # dtrn bench's disk figure is its own sequential write (train/src/disk_bandwidth.h); dd of the newest
  # shard (the checkpoint's own bytes, read back from the page cache; not zeros, which a virtual disk may
  # skip) with one fsync at the end is an independent cross-check on the same folder.
  shard=$(ls "$ckdir/checkpoints/$(cat "$ckdir/checkpoints/latest" 2>/dev/null)"/*.safetensors 2>/dev/null | head -1)
  { df -hT "$ckdir"; [[ -f $shard ]] && dd if="$shard" of="$ckdir/dd.tmp" bs=64M conv=fsync 2>&1 | tail -1; } |
    tee -a "$OUT/ckpt_bench.log"
  python3 - "$OUT/ckpt_bench.json" <<'PY' | tee "$OUT/ckpt_bench.md"
import json, sys
try:
    r = json.loads(open(sys.argv[1]).read())
    c = r["checkpoint"]
    print(f"{r['device']}, {r['params_M']:.1f}M parameters, {r['batch']} x {r['seq']} tokens per step; "
          f"median step {c['quiet_step_ms']:.1f} ms over {c['quiet_steps']} quiet steps, "
          f"{c['writing_step_ms']:.1f} ms over {c['writing_steps']} with a write in flight\n")
    print("| step | blocked ms | blocked / step | write ms | MB | write MB/s | / disk | appends ms | fsyncs ms | "
          "other file calls ms | hashing, encoding ms |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    step_ms = c["quiet_step_ms"] or c["writing_step_ms"]  # no quiet step when every write outlasts the gap
    for s in c["saves"]:
        print(f"| {s['step']} | {s['blocked_ms']:.1f} | {s['blocked_ms'] / step_ms:.2f} | "
              f"{s['write_ms']:.0f} | {s['bytes'] / 1e6:.0f} | {s['write_MB_s']:.0f} | {s['write_MB_s'] / c['disk_MB_s']:.2f} | "
              f"{s['append_ms']:.0f} | {s['fsync_ms']:.0f} | {s['fs_other_ms']:.0f} | {s['compute_ms']:.0f} |")
    print(f"\ndisk: {c['disk_MB_s']:.0f} MB/s sequential write + fsync of {c['disk_bytes'] / 1e6:.0f} MB")
except Exception as e:
    print(f"ckpt: no result ({e})")
PY
  rm -rf "$ckdir"
fi

if has peers; then
  step "peers (../shared/peer, carried as .peer): torch_dense.py and torch_dtrnet.py, vocab 50304"
  # PEERS picks them (both by default); one call may not hold both beside dtrn bench.
  if [[ " ${PEERS:-dense dtrnet} " == *" dense "* ]]; then
    PYTHONUNBUFFERED=1 timeout 420 python3 .peer/torch_dense.py --shape smollm-360m --seqs 2048,8192 \
      --compile "${PEER_COMPILE:-0,1}" --vocab 50304 2>&1 | grep '^{' | tee -a "$OUT/peers.jsonl"
  fi
  if [[ " ${PEERS:-dense dtrnet} " == *" dtrnet "* ]]; then
    PYTHONUNBUFFERED=1 timeout 300 python3 .peer/torch_dtrnet.py --seqs 2048,8192 --rs 0.1 --vocab 50304 2>&1 |
      grep '^{' | tee -a "$OUT/peers.jsonl"
  fi
fi

if has train; then
  step "dtrn train: 360m bilayer on the corpus, $TRAIN_STEPS steps"
  data=/tmp/dtrn-prep
  "$dtrn" prep --input .assets/corpus --out "$data" --tokenizer-dir .assets/tokenizer >"$OUT/train360m.log" 2>&1
  timeout 480 "$dtrn" train --config deploy/configs/360m.yaml --set "data.path=$data" \
    --set "train.steps=$TRAIN_STEPS" --set train.global_batch=16 --set train.warmup_steps=20 \
    --set train.eval_every=100 --set checkpoint.every=0 --run-dir /tmp/run360m 2>&1 | tee -a "$OUT/train360m.log" |
    grep -E "^step (1|50|100|150|200)/|^val|model:"
  status+=("train 360m rc=${PIPESTATUS[0]}")
  cp /tmp/run360m/metrics.jsonl "$OUT/train360m_metrics.jsonl" 2>/dev/null
fi

if has parallel; then
  ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  step "parallel: NCCL collectives and DP training tests on $ngpu GPUs"
  timeout 300 mpirun -np "$ngpu" --oversubscribe -x NCCL_NVLS_ENABLE "$BUILD/tests/parallel_tests" --gtest_color=no \
    --gtest_filter='Devices/Collectives.*' >"$OUT/parallel_collectives.log" 2>&1
  status+=("NCCL collectives x$ngpu rc=$?: $(grep -c 'OK \].*cuda' "$OUT/parallel_collectives.log") cuda checks passed")
  # The CPU rank tests run in CI; here the ones that need 2+ GPUs.
  timeout 600 "$BUILD/tests/train_tests" --gtest_color=no --gtest_filter='ParallelTrainingTest.*Gpus*' \
    >"$OUT/parallel_training.log" 2>&1
  status+=("parallel training tests rc=$?: $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/parallel_training.log" | tr '\n' ' ')")
  step "parallel: all-reduce bus bandwidth on $ngpu GPUs"
  timeout 120 mpirun -np "$ngpu" -x NCCL_NVLS_ENABLE "$BUILD/bin/allreduce_bench" --device cuda --max-mb 1024 \
    2>&1 | tee "$OUT/allreduce_bench.log"
  # The same sizes through torch.distributed's NCCL, in the same call: the reference busbw.
  timeout 120 python3 -m torch.distributed.run --nproc_per_node "$ngpu" bench/peer_allreduce.py --max-mb 1024 \
    2>&1 | grep -v "^W\|OMP_NUM_THREADS\|^\*" | tee -a "$OUT/allreduce_bench.log"
  step "parallel: DP weak scaling, 360m bilayer, seq 2048, micro_batch 8 per GPU"
  data=/tmp/dtrn-prep
  [[ -f $data/meta.json ]] || "$dtrn" prep --input .assets/corpus --out "$data" --tokenizer-dir .assets/tokenizer \
    >"$OUT/dp_prep.log" 2>&1
  # DP_BUCKETS: gradient bucket sizes (MiB) to compare; the job's default is 25.
  buckets="${DP_BUCKETS:-25}"
  for bucket in $buckets; do
  for zero in 0 1; do
    for np in 1 2 4; do
      (( np > ngpu )) && continue
      [[ $np == 1 && $bucket != "${buckets%% *}" ]] && continue  # one GPU has no buckets to compare
      run=/tmp/dp-scaling-$np-$zero-$bucket
      rm -rf "$run"
      timeout 400 mpirun -np "$np" -x NCCL_NVLS_ENABLE "$dtrn" train --config deploy/configs/360m.yaml \
        --set "data.path=$data" --set train.steps=25 --set train.micro_batch=8 --set "train.global_batch=$((8 * np))" \
        --set train.warmup_steps=5 --set train.eval_every=0 --set checkpoint.every=0 --set "parallel.dp=$np" \
        --set "parallel.zero=$zero" --set "parallel.bucket_mb=$bucket" --run-dir "$run" --quiet \
        >"$OUT/dp_scaling_${np}_${zero}_${bucket}.log" 2>&1
      python3 - "$run/metrics.jsonl" "$np" "$zero" "$bucket" <<'PY' | tee -a "$OUT/dp_scaling.txt"
import json, statistics, sys
path, np_, zero, bucket = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
label = f"dp={np_} zero={zero} bucket={bucket} MiB"
try:
    steps = [json.loads(l) for l in open(path) if '"train"' in l][5:]
    tps = statistics.median(s["tokens_per_s"] for s in steps)
    print(f"{label}: {tps:,.0f} tokens/s, {tps / np_:,.0f} per GPU, step {statistics.median(s['step_ms'] for s in steps):.0f} ms")
except Exception as e:
    print(f"{label}: no result ({e})")
PY
    done
  done
  done
  step "parallel: tensor parallelism, 1.3b bilayer, seq 2048, micro_batch 4, routed fraction 0.1: TP 1 -> 2 -> 4"
  for tp in 1 2 4; do
    (( tp > ngpu )) && continue
    timeout 400 mpirun -np "$tp" -x NCCL_NVLS_ENABLE "$dtrn" bench --config deploy/configs/1.3b.yaml \
      --set "parallel.tp=$tp" --routed-fraction 0.1 --json >"$OUT/tp_scaling_$tp.json" 2>"$OUT/tp_scaling_$tp.log"
    python3 - "$OUT/tp_scaling_$tp.json" "$tp" <<'PY' | tee -a "$OUT/tp_scaling.txt"
import json, sys
try:
    r = json.loads(open(sys.argv[1]).read())
    print(f"tp={r['tp']}: step {r['step_ms']:.0f} ms, {r['tok_s']:,.0f} tokens/s, {r['tflops']:.0f} TFLOP/s per GPU "
          f"(MFU {100 * r['mfu']:.1f}%), peak memory {r['peak_mem_GiB']:.1f} GiB per GPU")
except Exception as e:
    print(f"tp={sys.argv[2]}: no result ({e})")
PY
  done
fi

if has demo; then
  step "make demo's job on the GPU (deploy/demo.sh picks deploy/configs/demo-gpu.yaml)"
  BUILD="$BUILD" timeout 420 bash deploy/demo.sh >"$OUT/demo.log" 2>&1
  status+=("demo rc=$?: $(grep -E '^step [0-9]+/' "$OUT/demo.log" | tail -1)")
  grep -E "^demo:|^model:|^device|^step (1|100|200|300|400)/|^val" "$OUT/demo.log"
fi

if has routing; then
  step "routing ablation (resumable: repeat the call on the warm machine until all runs are done)"
  data=/tmp/dtrn-prep
  [ -f "$data/meta.json" ] || "$dtrn" prep --input .assets/corpus --out "$data" --tokenizer-dir .assets/tokenizer \
    >"$OUT/routing_prep.log" 2>&1
  # Runs finished in an earlier session travel as .ablation/<run>/metrics.jsonl (carry .ablation) and
  # are skipped.
  mkdir -p /tmp/dtrn-routing-ablation
  [ -d .ablation ] && cp -rn .ablation/. /tmp/dtrn-routing-ablation/
  BUILD="$BUILD" DATA="$data" bash bench/routing_ablation.sh gpu /tmp/dtrn-routing-ablation 2>&1 |
    tee "$OUT/routing_ablation.log" | grep -E "^routing ablation"
  status+=("routing ablation rc=${PIPESTATUS[0]}")
  # One archive: the device tool returns a limited number of files.
  (cd /tmp/dtrn-routing-ablation && tar czf "$OUT/routing.tgz" summary.md f-*.* */metrics.jsonl)
fi

if has hf && python3 -c 'import transformers' 2>/dev/null; then
  step "Hugging Face parity of dtrn export"
  timeout 300 bash tests/interop/run_hf_parity.sh "$BUILD" >"$OUT/interop.log" 2>&1
  status+=("hf parity rc=$?: $(grep parity: "$OUT/interop.log" | tail -1)")
fi

{ echo "== summary ($(head -1 "$OUT/gpu.txt"))"; printf '%s\n' "${status[@]}"; } | tee "$OUT/summary.txt"
[[ -s "$OUT/bench.jsonl" ]] && python3 bench/training_table.py "$OUT" | tee "$OUT/training_table.md"
# The device tool brings back at most 8 files from $OUT: past that, everything but the summary and the
# training table goes into one archive, so that no stage's log is lost.
if (( $(find "$OUT" -type f | wc -l) > 8 )); then
  (cd "$OUT" && find . -type f ! -name summary.txt ! -name training_table.md ! -name logs.tgz -print0 |
    tar czf logs.tgz --null -T - --remove-files)
  echo "logs: $OUT/logs.tgz ($(tar tzf "$OUT/logs.tgz" | wc -l) files)"
fi

#!/usr/bin/env bash
# `make demo`: trains a small bilayer DTRNet on the fetched corpus for a few minutes (on the GPU with
# deploy/configs/demo-gpu.yaml where dtrn sees one, else on the CPU with deploy/configs/tiny.yaml), with
# per-layer routing fractions each step and validation perplexity, through a coordinator whose live
# dashboard, /metrics and `dtrn top` show the routing while it trains; then says how to evaluate and
# export the run. On the CPU (and on a machine with 2 or more GPUs) the job is data-parallel: two workers,
# DP=2, each taking half of the config's global batch (micro-batches of half its micro_batch), so a step
# trains on the same tokens as one process would.
# `make demo` has already installed dependencies, built dtrn and fetched the assets.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD="${BUILD:-build}"
DTRN="$BUILD/bin/dtrn"
DATA=.assets/prep/demo
RUN="runs/demo-$(date +%Y%m%d-%H%M%S)"
CONFIG=deploy/configs/tiny.yaml
WHERE="the CPU"
WORKERS=2
gpus=$("$DTRN" info | sed -n 's/^cuda devices: //p')
if [ "${gpus:-0}" -gt 0 ]; then
  CONFIG=deploy/configs/demo-gpu.yaml
  WHERE="the GPU (bf16; $gpus CUDA device(s) found)"
  [ "$gpus" -ge 2 ] || WORKERS=1
fi
# DP=2 keeps the config's global batch: each worker runs half of it (micro-batches of half the size).
micro=$(sed -n 's/^ *micro_batch: *\([0-9]*\).*/\1/p' "$CONFIG")
PARALLEL=()
if [ "$WORKERS" -eq 2 ]; then
  PARALLEL=(--set parallel.dp=2 --set "train.micro_batch=$((micro / 2))")
fi

if [ ! -f "$DATA/meta.json" ]; then
  echo "demo: tokenizing the corpus into $DATA (GPT-2 BPE; held-out books and addresses -> val)"
  "$DTRN" prep --input .assets/corpus --out "$DATA"
fi

# Through a coordinator and an agent (`dtrn launch` embeds both) where this dtrn has them, so the run is
# watched live: the dashboard and /metrics URLs and the `dtrn top` command are printed first.
if "$DTRN" launch --help >/dev/null 2>&1; then
  if [ "$WORKERS" -eq 2 ]; then
    echo "demo: training $CONFIG on $WHERE into $RUN through a coordinator and an agent: 2 workers, DP=2"
  else
    echo "demo: training $CONFIG on $WHERE into $RUN through a coordinator and an agent (1 worker)"
  fi
  "$DTRN" launch --config "$CONFIG" --nproc "$WORKERS" --set "data.path=$DATA" "${PARALLEL[@]}" --run-dir "$RUN" \
    --state-dir "$RUN.coordinator" --metrics-listen 127.0.0.1:0 "$@"
else
  echo "demo: training $CONFIG on $WHERE into $RUN"
  "$DTRN" train --config "$CONFIG" --set "data.path=$DATA" --run-dir "$RUN" "$@"
fi

cat <<MSG

demo: done. The run directory is $RUN:
  $RUN/metrics.jsonl    one JSON line per step (loss, routing terms, per-layer f and s) and per validation
  $RUN/train.log        what was printed above
  $RUN/checkpoints/     the checkpoints
Evaluate it on the validation split:
  $DTRN eval --checkpoint $RUN --data $DATA
Export it as a Hugging Face Llama-named safetensors file:
  $DTRN export --checkpoint $RUN --out $RUN/model.safetensors
Continue it for more steps:
  $DTRN train --config $CONFIG --set data.path=$DATA --set train.steps=1000 --run-dir $RUN --resume
MSG

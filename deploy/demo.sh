#!/usr/bin/env bash
# `make demo`: trains a small bilayer DTRNet on the fetched corpus on the CPU for a few minutes, with
# per-layer routing fractions each step and validation perplexity, through a coordinator whose live
# dashboard, /metrics and `dtrn top` show the routing while it trains; then says how to evaluate and
# export the run. `make demo` has already installed dependencies, built dtrn and fetched the assets.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD="${BUILD:-build}"
DTRN="$BUILD/bin/dtrn"
DATA=.assets/prep/demo
RUN="runs/demo-$(date +%Y%m%d-%H%M%S)"

if [ ! -f "$DATA/meta.json" ]; then
  echo "demo: tokenizing the corpus into $DATA (GPT-2 BPE; held-out books and addresses -> val)"
  "$DTRN" prep --input .assets/corpus --out "$DATA"
fi

# Through a coordinator and an agent (`dtrn launch` embeds both) where this dtrn has them, so the run is
# watched live: the dashboard and /metrics URLs and the `dtrn top` command are printed first.
if "$DTRN" launch --help >/dev/null 2>&1; then
  echo "demo: training deploy/configs/tiny.yaml into $RUN through a coordinator and an agent (1 worker)"
  "$DTRN" launch --config deploy/configs/tiny.yaml --nproc 1 --set "data.path=$DATA" --run-dir "$RUN" \
    --state-dir "$RUN.coordinator" --metrics-listen 127.0.0.1:0 "$@"
else
  echo "demo: training deploy/configs/tiny.yaml into $RUN"
  "$DTRN" train --config deploy/configs/tiny.yaml --set "data.path=$DATA" --run-dir "$RUN" "$@"
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
  $DTRN train --config deploy/configs/tiny.yaml --set data.path=$DATA --set train.steps=600 --run-dir $RUN --resume
MSG

#!/usr/bin/env bash
# The routing-loss ablation of docs/routing-loss.md: small models on the fetched corpus, dense vs bilayer
# vs trilayer, and a grid of the sparsity weight lambda and the balance weight beta. Runs the jobs in
# parallel (JOBS at a time, THREADS OpenMP threads each) and prints one markdown table (final validation
# loss, mean routed fraction per D layer over the last 50 steps, starvation and fallback events).
#
#   bash bench/routing_ablation.sh [BUILD] [OUTDIR]
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
OUTDIR="${2:-runs/ablation}"
DATA="${DATA:-.assets/prep/demo}"
JOBS="${JOBS:-1}"
THREADS="${THREADS:-$(nproc)}"
STEPS="${STEPS:-200}"
DTRN="$BUILD/bin/dtrn"
mkdir -p "$OUTDIR"

base=(--config deploy/configs/tiny.yaml --set "data.path=$DATA" --set "train.steps=$STEPS"
      --set model.n_layers=8 --set train.eval_every="$STEPS" --set train.eval_batches=32
      --set checkpoint.every=0 --set checkpoint.keep=1 --set routing.starvation_window=20 --quiet)

# name | overrides
runs=(
  "dense|--set model.layout=dense"
  "bilayer-l8e-4-b0|--set model.layout=bilayer --set routing.sparsity_weight=8e-4 --set routing.balance_weight=0"
  "bilayer-l8e-4-b0.01|--set model.layout=bilayer --set routing.sparsity_weight=8e-4 --set routing.balance_weight=0.01"
  "bilayer-l8e-4-b0.1|--set model.layout=bilayer --set routing.sparsity_weight=8e-4 --set routing.balance_weight=0.1"
  "bilayer-l8e-4-b1|--set model.layout=bilayer --set routing.sparsity_weight=8e-4 --set routing.balance_weight=1"
  "bilayer-l8e-3-b0|--set model.layout=bilayer --set routing.sparsity_weight=8e-3 --set routing.balance_weight=0"
  "bilayer-l8e-3-b0.1|--set model.layout=bilayer --set routing.sparsity_weight=8e-3 --set routing.balance_weight=0.1"
  "trilayer-l8e-4-b0|--set model.layout=trilayer --set routing.sparsity_weight=8e-4 --set routing.balance_weight=0"
  "trilayer-l8e-4-b0.1|--set model.layout=trilayer --set routing.sparsity_weight=8e-4 --set routing.balance_weight=0.1"
)

running=0
for entry in "${runs[@]}"; do
  name="${entry%%|*}"
  read -r -a extra <<<"${entry#*|}"
  rm -rf "${OUTDIR:?}/$name"
  OMP_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS" \
    "$DTRN" train "${base[@]}" "${extra[@]}" --run-dir "$OUTDIR/$name" >"$OUTDIR/$name.out" 2>&1 &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
done
wait

python3 - "$OUTDIR" "${runs[@]}" <<'PY'
import json, sys
outdir, runs = sys.argv[1], [r.split("|")[0] for r in sys.argv[2:]]
print("| run | val loss | val ppl | routed fraction f per D layer (last 50 steps) | starved steps | fallback steps |")
print("| --- | --- | --- | --- | --- | --- |")
for name in runs:
    try:
        lines = [json.loads(l) for l in open(f"{outdir}/{name}/metrics.jsonl")]
    except OSError:
        print(f"| {name} | failed | | | | |"); continue
    train = [l for l in lines if l["kind"] == "train"]
    val = [l for l in lines if l["kind"] == "val"]
    tail = train[-50:]
    layers = sorted({x["layer"] for l in tail for x in l["layers"]})
    fs = " ".join(f"L{k}:{sum(x['f'] for l in tail for x in l['layers'] if x['layer']==k)/len(tail):.3f}" for k in layers) or "-"
    starved = sum(1 for l in train for x in l["layers"] if x["starved"])
    fallback = sum(1 for l in train for x in l["layers"] if x["fallback"])
    v = val[-1] if val else {"loss": float("nan"), "ppl": float("nan")}
    print(f"| {name} | {v['loss']:.4f} | {v['ppl']:.1f} | {fs} | {starved} | {fallback} |")
PY

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
SEED="${SEED:-1}"
RUNSET="${RUNSET:-full}"  # full: the whole grid; beta: the bilayer beta sweep only (for extra seeds)
DTRN="$BUILD/bin/dtrn"
mkdir -p "$OUTDIR"

base=(--config deploy/configs/tiny.yaml --set "data.path=$DATA" --set "train.steps=$STEPS"
      --set model.n_layers=8 --set train.eval_every="$STEPS" --set train.eval_batches=32
      --set checkpoint.every=0 --set checkpoint.keep=1 --set routing.starvation_window=20
      --set "train.seed=$SEED" --quiet)

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

if [ "$RUNSET" = beta ]; then
  kept=()
  for r in "${runs[@]}"; do [[ "$r" == bilayer-l8e-4-* ]] && kept+=("$r"); done
  runs=("${kept[@]}")
fi
if [ "$SEED" != 1 ]; then runs=("${runs[@]/|/-s$SEED|}"); fi

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

python3 bench/ablation_table.py "$OUTDIR" "${runs[@]%%|*}"

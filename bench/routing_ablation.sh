#!/usr/bin/env bash
# The routing-control ablation of docs/routing-loss.md: dense and bilayer models, the spec's routing terms
# (the baseline) and each routing control, at two sizes and two seeds, equal tokens per size; then the
# table and the per-setting plots of bench/routing_ablation_summary.py.
#
#   bash bench/routing_ablation.sh gpu   [OUTDIR]   # ~25M and ~125M parameters, seq 1024, on one GPU
#   bash bench/routing_ablation.sh smoke [OUTDIR]   # a tiny model for a few steps on the CPU (minutes)
#
# Resumable and budgeted, for a GPU machine lent in commands of at most 10 minutes: a run whose
# metrics.jsonl already holds its last step is skipped, and no new run starts once BUDGET_S seconds
# (default 480) have passed since the script started; run the same command again (on the same machine,
# or with OUTDIR carried over) until it prints "all runs done". Each GPU run is well under a minute at
# the sizes below (STEPS_25M, STEPS_125M say how many steps of 16 x 1024 tokens), so the whole plan
# (2 sizes x 11 settings x 2 seeds = 44 runs) is about two such commands per size. SIZES, SETTINGS and
# SEEDS restrict the plan (space-separated names from the tables below).
#
# Environment: BUILD (build), DATA (the prepared corpus; made by `dtrn prep` from .assets/corpus when
# missing).
set -uo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-gpu}"
OUTDIR="${2:-runs/routing-ablation-$MODE}"
BUILD="${BUILD:-build}"
DTRN="$BUILD/bin/dtrn"
DATA="${DATA:-.assets/prep/demo}"
BUDGET_S="${BUDGET_S:-480}"
START=$(date +%s)

# size | model overrides | steps
case "$MODE" in
  gpu)
    sizes=(
      "25m|model.d_model=384 model.n_layers=6 model.n_heads=6 model.n_kv_heads=2 model.d_ff=1024|${STEPS_25M:-400}"
      "125m|model.d_model=768 model.n_layers=12 model.n_heads=12 model.n_kv_heads=4 model.d_ff=2048|${STEPS_125M:-250}"
    )
    common="model.seq_len=1024 train.micro_batch=16 train.global_batch=16 train.lr=1e-3 train.min_lr=1e-4
            train.device=cuda train.precision=bf16 train.eval_batches=16"
    seeds_default="1 2"
    ;;
  smoke)
    sizes=("tiny|model.d_model=64 model.n_layers=6 model.n_heads=4 model.n_kv_heads=2 model.d_ff=160|${STEPS_SMOKE:-12}")
    common="model.seq_len=64 train.micro_batch=4 train.global_batch=4 train.lr=3e-3 train.min_lr=3e-4
            train.device=cpu train.eval_batches=2"
    seeds_default="1"
    ;;
  *)
    echo "usage: bash bench/routing_ablation.sh gpu|smoke [OUTDIR]" >&2
    exit 2
    ;;
esac

# setting | routing overrides. Every setting names the controls it uses and turns the rest off, so the
# table does not depend on the trainer's defaults.
off="routing.bias_rate=0 routing.bias_gamma=0 routing.balance_weight=0 routing.balance_multiplier_lr=0
     routing.z_loss_weight=0 routing.fallback=zero"
settings=(
  "dense|model.layout=dense $off"
  "spec|model.layout=bilayer $off"
  "bias-r1|model.layout=bilayer $off routing.bias_rate=1"
  "bias-r0.1|model.layout=bilayer $off routing.bias_rate=0.1"
  "bias-r1-unbiased|model.layout=bilayer $off routing.bias_rate=1 routing.bias_path=unbiased"
  "bias-r1-lambda0|model.layout=bilayer $off routing.bias_rate=1 routing.sparsity_weight=0"
  "trim-g1e-3|model.layout=bilayer $off routing.bias_gamma=1e-3"
  "soft-b1|model.layout=bilayer $off routing.balance_on=soft_fraction routing.balance_weight=1"
  "lagrange|model.layout=bilayer $off routing.balance_on=soft_fraction routing.balance_multiplier_lr=0.1"
  "bias-r1-z1e-3|model.layout=bilayer $off routing.bias_rate=1 routing.z_loss_weight=1e-3"
  "band|model.layout=bilayer $off routing.fallback=band"
)

want() {  # want LIST NAME: NAME is in the space-separated LIST, or LIST is empty
  [ -z "$1" ] && return 0
  for w in $1; do [ "$w" = "$2" ] && return 0; done
  return 1
}

if [ ! -f "$DATA/meta.json" ]; then
  "$DTRN" prep --input .assets/corpus --out "$DATA" || exit 1
fi
mkdir -p "$OUTDIR"
pending=0
failed=0
names=()
for size_entry in "${sizes[@]}"; do
  IFS='|' read -r size model_sets steps <<<"$size_entry"
  want "${SIZES:-}" "$size" || continue
  for setting_entry in "${settings[@]}"; do
    setting="${setting_entry%%|*}"
    want "${SETTINGS:-}" "$setting" || continue
    for seed in ${SEEDS:-$seeds_default}; do
      name="$size-$setting-s$seed"
      names+=("$name")
      run="$OUTDIR/$name"
      if [ -f "$run/metrics.jsonl" ] && grep -q "\"step\":$steps," "$run/metrics.jsonl"; then continue; fi
      if [ $(($(date +%s) - START)) -ge "$BUDGET_S" ]; then
        pending=$((pending + 1))
        continue
      fi
      sets=()
      for kv in $model_sets $common ${setting_entry#*|} "data.path=$DATA" "train.steps=$steps" \
                "train.warmup_steps=$((steps / 10))" "train.eval_every=$steps" "train.seed=$seed" \
                checkpoint.every=0 checkpoint.keep=1 routing.starvation_window=20; do
        sets+=(--set "$kv")
      done
      rm -rf "$run"
      echo "routing ablation: $name ($steps steps)"
      if ! "$DTRN" train --config deploy/configs/tiny.yaml "${sets[@]}" --run-dir "$run" --quiet \
          >"$run.out" 2>&1; then
        echo "routing ablation: $name failed (see $run.out)" >&2
        failed=$((failed + 1))
      fi
    done
  done
done

python3 bench/routing_ablation_summary.py "$OUTDIR" "${names[@]}"
if [ "$failed" -gt 0 ]; then
  echo "routing ablation: $failed runs failed (their .out files say why); a new command retries them"
  exit 1
elif [ "$pending" -gt 0 ]; then
  echo "routing ablation: $pending runs left (the budget of ${BUDGET_S}s is spent): run the same command again"
else
  echo "routing ablation: all runs done; table and plots in $OUTDIR/summary.md"
fi

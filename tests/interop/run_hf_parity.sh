#!/usr/bin/env bash
# End-to-end check of `dtrn export` against Hugging Face transformers (run where python3 has torch and
# transformers: the GPU machine; bench/gpu_suite.sh calls it). Prepares a tiny dataset from the repo's
# own docs, trains a dense GQA model for 3 steps on the CPU, exports it, and compares `dtrn eval --text`
# with LlamaForCausalLM's loss on the same windows (hf_llama_parity.py).
#
#   bash tests/interop/run_hf_parity.sh BUILD_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
DTRN="${1:-build}/bin/dtrn"
TOK=.assets/tokenizer
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/corpus"
cp README.md "$tmp/corpus/readme.txt"
cat docs/*.md > "$tmp/corpus/docs.txt"
"$DTRN" prep --input "$tmp/corpus" --out "$tmp/prep" --val-docs readme --tokenizer-dir "$TOK" >/dev/null
"$DTRN" train --config deploy/configs/tiny.yaml --set "data.path=$tmp/prep" --set model.layout=dense \
  --set model.n_layers=2 --set model.seq_len=64 --set train.steps=3 --set train.warmup_steps=0 --set train.eval_every=0 \
  --set train.device=cpu --run-dir "$tmp/run" --quiet
"$DTRN" export --checkpoint "$tmp/run" --out "$tmp/model.safetensors" >/dev/null
"$DTRN" tokenize --tokenizer-dir "$TOK" <"$tmp/corpus/readme.txt" >"$tmp/tokens.txt"
loss=$("$DTRN" eval --checkpoint "$tmp/run" --text "$tmp/corpus/readme.txt" --tokenizer-dir "$TOK" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["loss"])')
python3 tests/interop/hf_llama_parity.py --model "$tmp/model.safetensors" --tokens "$tmp/tokens.txt" \
  --dtrn-loss "$loss"

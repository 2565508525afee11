#!/usr/bin/env bash
# Tokenizer throughput: dtrn (build/bin/tokenizer_bench) and the JS reference gpt-tokenizer@4.0.0 under
# node, on the same text (the whole fetched corpus, 251 documents, ~22 MB), in one run, as one table.
# Also checks that both produced the same ids (token count and FNV-1a checksum).
#
# usage: bench/tokenizer.sh [BUILD_DIR]     (default: build; run `make assets` and build first)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
bench=$build/bin/tokenizer_bench
[ -x "$bench" ] || { echo "tokenizer.sh: $bench not built (cmake --build $build --target tokenizer_bench)" >&2; exit 1; }
[ -d .assets/corpus ] || { echo "tokenizer.sh: .assets/corpus missing (run make assets)" >&2; exit 1; }

list=$(mktemp)
trap 'rm -f "$list"' EXIT
find .assets/corpus -name '*.txt' | LC_ALL=C sort > "$list"

results=$("$bench" --files "$list" --tokenizer-dir .assets/tokenizer; node bench/tokenizer_bench.mjs --files "$list")

node - "$results" <<'JS'
const rows = process.argv[2].trim().split('\n').map((l) => JSON.parse(l));
const js = rows.find((r) => r.impl.startsWith('js'));
const mb = (rows[0].bytes / 1e6).toFixed(1);
console.log(`corpus: ${rows.length ? mb : 0} MB, ${rows[0].tokens} tokens`);
console.log('| encoder | threads | cold MB/s | warm MB/s | vs JS (cold) | vs JS (warm) |');
console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
for (const r of rows) {
  const x = (a, b) => (a / b).toFixed(1) + 'x';
  console.log(`| ${r.impl} | ${r.threads} | ${r.cold_mb_s.toFixed(1)} | ${r.warm_mb_s.toFixed(1)} | ` +
              `${x(r.cold_mb_s, js.cold_mb_s)} | ${x(r.warm_mb_s, js.warm_mb_s)} |`);
}
const same = rows.every((r) => r.tokens === js.tokens && r.checksum === js.checksum);
console.log(same ? 'ids: identical (token count and checksum)' : 'ids: DIFFER between encoders');
if (!same) process.exit(1);
JS

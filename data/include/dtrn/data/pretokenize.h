// GPT-2's pre-tokenizer: splits text into the pieces that byte-pair merges never cross. The split
// is the one of GPT-2's regex (also tiktoken's r50k_base):
//     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// with \p{L} and \p{N} the Unicode general categories and \s the Unicode White_Space property.
// pretokenize() is a hand-written scanner (the fast path); pretokenize_reference() runs the regex
// itself with PCRE2 and is the executable specification the scanner is tested against. Both are
// thread-safe.
//
// Note [Invalid UTF-8]
// GPT-2's BPE works on bytes, so any byte string can be encoded. A byte that does not belong to a
// well-formed UTF-8 sequence (Unicode Table 3-7: stray continuation bytes, truncated sequences,
// overlongs, surrogates, code points above U+10FFFF) is taken as one character of its own that is
// neither letter, number nor space: it joins a ` ?[^\s\p{L}\p{N}]+` piece. Its byte is then encoded
// like any other, so decode(encode(x)) == x holds for every byte string, valid UTF-8 or not, and
// the result is deterministic. Text that is valid UTF-8 is split exactly as the regex splits it.
#pragma once

#include <string_view>
#include <vector>

#include "dtrn/runtime/status.h"

namespace dtrn::data {

// The pre-tokens of `text`, in order; concatenated they give `text` back. Views point into `text`.
std::vector<std::string_view> pretokenize(std::string_view text);

// The same split computed by PCRE2 (JIT) running the regex above. `text` must be valid UTF-8
// (InvalidArgument otherwise): PCRE2 has no notion of Note [Invalid UTF-8].
StatusOr<std::vector<std::string_view>> pretokenize_reference(std::string_view text);

}  // namespace dtrn::data

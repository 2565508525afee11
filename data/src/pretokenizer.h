// The fast GPT-2 pre-tokenizer: a single forward scan, no backtracking, on the four character
// classes of unicode_class.h. Private to dtrn_data; the public entry points are in
// dtrn/data/pretokenize.h, whose contract (the regex, Note [Invalid UTF-8]) this implements. Not
// thread-safe per object; cheap to build.
//
// How the regex reduces to a scan: at each position the alternatives are tried in order, and all
// but the whitespace ones are greedy runs of one class, optionally led by one ASCII space.
// `\s+(?!\S)` takes a whitespace run whole when it ends the text and otherwise all of it but its
// last character (which then leads the next piece, e.g. " word"); a single whitespace character
// before a non-space falls to `\s+`.
#pragma once

#include <cstddef>
#include <string_view>

#include "unicode_class.h"

namespace dtrn::data {

class PreTokenizer {
 public:
  explicit PreTokenizer(std::string_view text)
      : s_(reinterpret_cast<const unsigned char*>(text.data())), n_(text.size()) {}

  // The next piece, or false at the end of the text.
  bool next(std::string_view* piece) {
    if (pos_ >= n_) return false;
    const size_t start = pos_;
    pos_ = piece_end(start);
    *piece = std::string_view(reinterpret_cast<const char*>(s_) + start, pos_ - start);
    return true;
  }

 private:
  size_t run_end(size_t i, CharClass cls) const {
    while (i < n_) {
      CharInfo c = char_at(s_, i, n_);
      if (c.cls != cls) break;
      i += c.len;
    }
    return i;
  }

  size_t contraction_end(size_t i) const {
    if (i + 1 >= n_) return 0;
    const unsigned char a = s_[i + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if (i + 2 >= n_) return 0;
    const unsigned char b = s_[i + 2];
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    return 0;
  }

  size_t piece_end(size_t i) const {
    if (s_[i] == '\'') {
      if (size_t end = contraction_end(i)) return end;
    }
    CharInfo c = char_at(s_, i, n_);
    if (s_[i] == ' ' && i + 1 < n_) {
      CharInfo d = char_at(s_, i + 1, n_);
      if (d.cls != CharClass::kSpace) return run_end(i + 1, d.cls);
    }
    if (c.cls != CharClass::kSpace) return run_end(i + c.len, c.cls);
    // A whitespace run [i, j); `last` is where its last character starts.
    size_t j = i, last = i;
    while (j < n_) {
      CharInfo w = char_at(s_, j, n_);
      if (w.cls != CharClass::kSpace) break;
      last = j;
      j += w.len;
    }
    if (j == n_ || last == i) return j;
    return last;
  }

  const unsigned char* s_;
  size_t n_;
  size_t pos_ = 0;
};

}  // namespace dtrn::data

// Unicode character classes for GPT-2's pre-tokenizer, and a strict UTF-8 decoder. Private to
// dtrn_data.
//
// The pre-tokenizer only needs four classes: letters (\p{L}), numbers (\p{N}), white space (\s, the
// Unicode White_Space property) and everything else. Invalid UTF-8 is decoded one byte at a time as
// a character of class kOther (see Note [Invalid UTF-8] in pretokenize.h). Thread-safe: the tables
// are immutable after their first use.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dtrn::data {

enum class CharClass : uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3 };

// The class of a code point (0..0x10FFFF).
CharClass char_class(uint32_t cp);

// One character of a byte string: its class and how many bytes it spans (1..4).
struct CharInfo {
  CharClass cls;
  uint32_t len;
};

// Decodes the character at s[i] (i < n). A well-formed UTF-8 sequence (Unicode Table 3-7: no
// overlongs, no surrogates, nothing above U+10FFFF) is one character; any other byte is a one-byte
// kOther character.
inline CharInfo char_at(const unsigned char* s, size_t i, size_t n) {
  // clang-format off
  static constexpr CharClass kAscii[128] = {
#define O CharClass::kOther
#define L CharClass::kLetter
#define N CharClass::kNumber
#define S CharClass::kSpace
      O, O, O, O, O, O, O, O, O, S, S, S, S, S, O, O,  // 0x00: \t \n \v \f \r
      O, O, O, O, O, O, O, O, O, O, O, O, O, O, O, O,  // 0x10
      S, O, O, O, O, O, O, O, O, O, O, O, O, O, O, O,  // 0x20: space, punctuation
      N, N, N, N, N, N, N, N, N, N, O, O, O, O, O, O,  // 0x30: digits
      O, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L,  // 0x40: @ A-O
      L, L, L, L, L, L, L, L, L, L, L, O, O, O, O, O,  // 0x50: P-Z
      O, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L,  // 0x60: ` a-o
      L, L, L, L, L, L, L, L, L, L, L, O, O, O, O, O,  // 0x70: p-z
#undef O
#undef L
#undef N
#undef S
  };
  // clang-format on
  const unsigned b0 = s[i];
  if (b0 < 0x80) return {kAscii[b0], 1};
  const size_t left = n - i;
  auto cont = [&](size_t k) { return (s[i + k] & 0xC0) == 0x80; };
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    if (left >= 2 && cont(1)) return {char_class(((b0 & 0x1F) << 6) | (s[i + 1] & 0x3F)), 2};
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (left >= 3 && cont(1) && cont(2)) {
      const unsigned b1 = s[i + 1];
      // E0 needs A0..BF (no overlongs); ED needs 80..9F (no surrogates).
      if (!(b0 == 0xE0 && b1 < 0xA0) && !(b0 == 0xED && b1 > 0x9F)) {
        return {char_class(((b0 & 0x0F) << 12) | ((b1 & 0x3F) << 6) | (s[i + 2] & 0x3F)), 3};
      }
    }
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    if (left >= 4 && cont(1) && cont(2) && cont(3)) {
      const unsigned b1 = s[i + 1];
      // F0 needs 90..BF (no overlongs); F4 needs 80..8F (nothing above U+10FFFF).
      if (!(b0 == 0xF0 && b1 < 0x90) && !(b0 == 0xF4 && b1 > 0x8F)) {
        return {char_class(((b0 & 0x07) << 18) | ((b1 & 0x3F) << 12) | ((s[i + 2] & 0x3F) << 6) |
                           (s[i + 3] & 0x3F)),
                4};
      }
    }
  }
  return {CharClass::kOther, 1};
}

}  // namespace dtrn::data

// The hand-written pre-tokenizer against PCRE2 running GPT-2's regex (its executable
// specification), on every Unicode code point, on random strings from an adversarial alphabet and
// on the fetched corpus; and Note [Invalid UTF-8] on hand-picked ill-formed bytes.
#include "dtrn/data/pretokenize.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace dtrn::data {
namespace {

std::string utf8(uint32_t c) {
  std::string s;
  if (c < 0x80) {
    s += char(c);
  } else if (c < 0x800) {
    s += char(0xC0 | (c >> 6)), s += char(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    s += char(0xE0 | (c >> 12)), s += char(0x80 | ((c >> 6) & 0x3F)), s += char(0x80 | (c & 0x3F));
  } else {
    s += char(0xF0 | (c >> 18)), s += char(0x80 | ((c >> 12) & 0x3F));
    s += char(0x80 | ((c >> 6) & 0x3F)), s += char(0x80 | (c & 0x3F));
  }
  return s;
}

// Compares the two splits and reports the first difference with its surroundings.
void expect_same_split(const std::string& text, const std::string& what) {
  auto reference = pretokenize_reference(text);
  ASSERT_TRUE(reference.ok()) << what << ": " << reference.status().message();
  std::vector<std::string_view> fast = pretokenize(text);
  size_t n = std::min(fast.size(), reference->size());
  for (size_t i = 0; i < n; ++i) {
    if (fast[i] != (*reference)[i]) {
      FAIL() << what << ": piece " << i << " differs: scanner '" << fast[i] << "' vs regex '"
             << (*reference)[i] << "' (previous '" << (i ? fast[i - 1] : "") << "')";
    }
  }
  EXPECT_EQ(fast.size(), reference->size()) << what;
}

TEST(Pretokenize, GoldenSplits) {
  using V = std::vector<std::string_view>;
  EXPECT_EQ(pretokenize("Hello, world!"), (V{"Hello", ",", " world", "!"}));
  EXPECT_EQ(pretokenize("I'm they're it's'  x"),
            (V{"I", "'m", " they", "'re", " it", "'s", "'", " ", " x"}));
  EXPECT_EQ(pretokenize("a  \n\nb   "), (V{"a", "  \n", "\n", "b", "   "}));
  EXPECT_EQ(pretokenize("x 123 4.5"), (V{"x", " 123", " 4", ".", "5"}));
  EXPECT_EQ(pretokenize(""), V{});
}

// Each code point c is placed where its class decides the split: after a letter, before a digit,
// after punctuation and between spaces. Any class the table gets wrong changes some split.
TEST(Pretokenize, EveryCodePointMatchesPcre2) {
  std::string text;
  for (uint32_t c = 0; c <= 0x10FFFF; ++c) {
    if (c >= 0xD800 && c <= 0xDFFF) continue;
    const std::string u = utf8(c);
    text += "a" + u + "1" + u + "." + u + " " + u + "  " + u + "x\n";
    if (text.size() > (1 << 20)) {
      expect_same_split(text, "code points up to U+" + std::to_string(c));
      text.clear();
    }
  }
  expect_same_split(text, "last code points");
}

TEST(Pretokenize, RandomStringsMatchPcre2) {
  const std::vector<std::string> alphabet = {
      " ",          " ",      "  ",     "\n",     "\r\n",   "\t",     "'",      "s", "t",
      "re",         "ve",     "ll",     "m",      "d",      "a",      "Z",      "1", "42",
      "\u0663",     "\u00e9", "\u4e2d", "\u3000", "\u00a0", "\u2028", "\u0085", "!", ".",
      "\U0001F600", "\u180e", "\u00b2", "\u2167", "'S",     "\u0301", "\u200b"};
  std::mt19937 rng(1234);
  for (int iter = 0; iter < 20000; ++iter) {
    std::string text;
    int len = 1 + int(rng() % 24);
    for (int i = 0; i < len; ++i) text += alphabet[rng() % alphabet.size()];
    expect_same_split(text, "random string " + std::to_string(iter));
    if (HasFatalFailure() || HasNonfatalFailure()) return;
  }
}

TEST(Pretokenize, CorpusMatchesPcre2) {
  const std::filesystem::path corpus = DTRN_SOURCE_DIR "/.assets/corpus";
  ASSERT_TRUE(std::filesystem::is_directory(corpus)) << corpus << " missing: run `make assets`";
  int files = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(corpus)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    expect_same_split(ss.str(), entry.path().string());
    ++files;
  }
  EXPECT_EQ(files, 18 + 233);
}

// Note [Invalid UTF-8]: each ill-formed byte is one character of the "other" class.
TEST(Pretokenize, InvalidUtf8BytesAreOtherCharacters) {
  using V = std::vector<std::string_view>;
  EXPECT_EQ(pretokenize("ab\xff\xfe cd"), (V{"ab", "\xff\xfe", " cd"}));
  EXPECT_EQ(pretokenize("x \x80y"), (V{"x", " \x80", "y"}));
  EXPECT_EQ(pretokenize("\xc3"), (V{"\xc3"}));  // truncated 2-byte sequence
  EXPECT_EQ(pretokenize("\xc0\xaf"
                        "a"),
            (V{"\xc0\xaf", "a"}));  // overlong '/'
  EXPECT_EQ(pretokenize("\xed\xa0\x80"
                        "a"),
            (V{"\xed\xa0\x80", "a"}));                                  // a surrogate
  EXPECT_EQ(pretokenize("\xf4\x90\x80\x80"), (V{"\xf4\x90\x80\x80"}));  // above U+10FFFF
  EXPECT_EQ(pretokenize("\xe4\xb8 1"), (V{"\xe4\xb8", " 1"}));          // truncated 3-byte sequence
  EXPECT_EQ(pretokenize("\xc3\xa9t\xc3\xa9"), (V{"\xc3\xa9t\xc3\xa9"}));  // valid: one word
  EXPECT_FALSE(pretokenize_reference("\xff").ok());
}

}  // namespace
}  // namespace dtrn::data

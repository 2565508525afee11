#include "dtrn/data/pretokenize.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <memory>
#include <string>

#include "pretokenizer.h"

namespace dtrn::data {

std::vector<std::string_view> pretokenize(std::string_view text) {
  std::vector<std::string_view> pieces;
  PreTokenizer scanner(text);
  std::string_view piece;
  while (scanner.next(&piece)) pieces.push_back(piece);
  return pieces;
}

namespace {

// GPT-2's regex with \s spelled out as White_Space: PCRE2's \s also matches U+180E, which Unicode
// removed from White_Space in 6.3 (tiktoken's regex engine follows White_Space).
std::string gpt2_pattern() {
  const std::string ws =
      "\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"
      "\\x{205F}\\x{3000}";
  return "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" + ws + "\\p{L}\\p{N}]+|[" + ws +
         "]+(?![^" + ws + "])|[" + ws + "]+";
}

struct CodeDeleter {
  void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};
struct MatchDataDeleter {
  void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};

const pcre2_code* compiled_pattern() {
  static const std::unique_ptr<pcre2_code, CodeDeleter> code = [] {
    const std::string pattern = gpt2_pattern();
    int error = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* c = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(),
                                  PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
    DTRN_ASSERT(c != nullptr, "GPT-2 regex does not compile, PCRE2 error ", error, " at ", offset);
    pcre2_jit_compile(c, PCRE2_JIT_COMPLETE);  // optional speed-up: matching works without it
    return std::unique_ptr<pcre2_code, CodeDeleter>(c);
  }();
  return code.get();
}

}  // namespace

StatusOr<std::vector<std::string_view>> pretokenize_reference(std::string_view text) {
  const pcre2_code* code = compiled_pattern();
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> match(
      pcre2_match_data_create_from_pattern(code, nullptr));
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  std::vector<std::string_view> pieces;
  size_t pos = 0;
  uint32_t options = 0;
  while (pos < text.size()) {
    int rc = pcre2_match(code, subject, text.size(), pos, options, match.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) {
      return Status::Internal("GPT-2 regex matched nothing at byte " + std::to_string(pos));
    }
    if (rc < 0) {
      return Status::InvalidArgument("pretokenize_reference: PCRE2 error " + std::to_string(rc) +
                                     " (is the text valid UTF-8?)");
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match.get());
    if (ov[0] != pos) {
      return Status::Internal("GPT-2 regex skipped bytes " + std::to_string(pos) + ".." +
                              std::to_string(ov[0]));
    }
    pieces.push_back(text.substr(ov[0], ov[1] - ov[0]));
    pos = ov[1];
    // The UTF check is done once, on the first call: later calls start at character boundaries.
    options = PCRE2_NO_UTF_CHECK;
  }
  return pieces;
}

}  // namespace dtrn::data

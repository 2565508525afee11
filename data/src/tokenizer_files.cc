// The two file forms of GPT-2's vocabulary, read into a BpeVocab (see tokenizer.h for the
// contract).
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>

#include "bpe_vocab.h"
#include "dtrn/data/tokenizer.h"
#include "dtrn/runtime/file_io.h"
#include "dtrn/runtime/sha256.h"

namespace dtrn::data {
namespace {

// The next '\n'-terminated line of `text` from *pos (the last may lack the '\n'); false at the end.
bool next_line(std::string_view text, size_t* pos, std::string_view* line) {
  if (*pos >= text.size()) return false;
  size_t end = text.find('\n', *pos);
  if (end == std::string_view::npos) end = text.size();
  *line = text.substr(*pos, end - *pos);
  *pos = end + 1;
  return true;
}

constexpr char kEndOfText[] = "<|endoftext|>";

// GPT-2 stores token bytes as printable characters: bytes that are printable Latin-1 map to
// themselves, the other 68 to U+0100.. in byte order (encoder.py's bytes_to_unicode). Returns code
// point -> byte.
std::unordered_map<uint32_t, uint8_t> unicode_to_byte() {
  std::unordered_map<uint32_t, uint8_t> map;
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    map[printable ? b : next++] = static_cast<uint8_t>(b);
  }
  return map;
}

// Decodes a GPT-2 token string (UTF-8 of mapped code points) to its bytes; false if it is not one.
bool gpt2_token_bytes(const std::string& s, const std::unordered_map<uint32_t, uint8_t>& to_byte,
                      std::string* out) {
  out->clear();
  for (size_t i = 0; i < s.size();) {
    const unsigned char b0 = s[i];
    uint32_t cp;
    size_t len;
    if (b0 < 0x80) {
      cp = b0, len = 1;
    } else if ((b0 & 0xE0) == 0xC0 && i + 1 < s.size()) {
      cp = ((b0 & 0x1F) << 6) | (s[i + 1] & 0x3F), len = 2;
    } else {
      return false;  // every mapped code point is below U+0800
    }
    auto it = to_byte.find(cp);
    if (it == to_byte.end()) return false;
    out->push_back(static_cast<char>(it->second));
    i += len;
  }
  return !out->empty();
}

StatusOr<std::string> decode_base64(std::string_view s) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    if (c == '=') break;
    int v = value(c);
    if (v < 0) return Status::InvalidArgument("bad base64 '" + std::string(s) + "'");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return out;
}

bool is_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string base_name(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

StatusOr<Tokenizer> Tokenizer::FromGpt2Files(const std::string& encoder_json,
                                             const std::string& vocab_bpe) {
  auto encoder_text = read_file(encoder_json);
  if (!encoder_text.ok()) return encoder_text.status();
  auto merges_text = read_file(vocab_bpe);
  if (!merges_text.ok()) return merges_text.status();

  nlohmann::json encoder;
  try {
    encoder = nlohmann::json::parse(*encoder_text);
  } catch (const std::exception& e) {
    return Status::InvalidArgument(encoder_json + ": not valid JSON: " + e.what());
  }
  if (!encoder.is_object()) return Status::InvalidArgument(encoder_json + ": not a JSON object");

  BpeVocab vocab;
  vocab.name = "gpt2";
  vocab.origin = encoder_json;
  vocab.tokens.resize(encoder.size());
  std::vector<bool> seen(encoder.size(), false);
  std::unordered_map<std::string, uint32_t> id_of;  // GPT-2 token string -> id
  const auto to_byte = unicode_to_byte();
  bool have_eot = false;
  std::string bytes;
  for (const auto& [key, value] : encoder.items()) {
    if (!value.is_number_unsigned() || value.get<uint64_t>() >= encoder.size()) {
      return Status::InvalidArgument(encoder_json + ": id of '" + key + "' is not in [0, " +
                                     std::to_string(encoder.size()) + ")");
    }
    const uint32_t id = value.get<uint32_t>();
    if (seen[id])
      return Status::InvalidArgument(encoder_json + ": id " + std::to_string(id) + " twice");
    seen[id] = true;
    id_of[key] = id;
    if (key == kEndOfText) {
      vocab.tokens[id] = kEndOfText;
      vocab.eot_id = id;
      have_eot = true;
    } else if (gpt2_token_bytes(key, to_byte, &bytes)) {
      vocab.tokens[id] = bytes;
    } else {
      return Status::InvalidArgument(encoder_json + ": '" + key + "' is not a GPT-2 byte string");
    }
  }
  if (!have_eot) return Status::InvalidArgument(encoder_json + ": no " + std::string(kEndOfText));

  const std::string& text = *merges_text;
  size_t pos = 0, line_no = 0;
  std::string_view line;
  while (next_line(text, &pos, &line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t space = line.find(' ');
    auto bad = [&](const std::string& why) {
      return Status::InvalidArgument(vocab_bpe + ":" + std::to_string(line_no) + ": " + why);
    };
    if (space == std::string_view::npos || line.find(' ', space + 1) != std::string_view::npos) {
      return bad("expected two tokens separated by one space");
    }
    auto left = id_of.find(std::string(line.substr(0, space)));
    auto right = id_of.find(std::string(line.substr(space + 1)));
    if (left == id_of.end() || right == id_of.end())
      return bad("token not in " + base_name(encoder_json));
    vocab.merges.emplace_back(left->second, right->second);
  }
  vocab.origin = encoder_json + " + " + vocab_bpe;
  vocab.sources = {{base_name(encoder_json), sha256_hex(*encoder_text)},
                   {base_name(vocab_bpe), sha256_hex(*merges_text)}};
  return FromVocab(std::move(vocab));
}

StatusOr<Tokenizer> Tokenizer::FromTiktoken(const std::string& path) {
  auto file = read_file(path);
  if (!file.ok()) return file.status();
  const std::string& text = *file;

  BpeVocab vocab;
  vocab.name = "gpt2";
  vocab.origin = path;
  std::unordered_map<std::string, uint32_t> rank_of;
  size_t pos = 0, line_no = 0;
  std::string_view line;
  while (next_line(text, &pos, &line)) {
    ++line_no;
    if (line.empty()) continue;
    auto bad = [&](const std::string& why) {
      return Status::InvalidArgument(path + ":" + std::to_string(line_no) + ": " + why);
    };
    const size_t space = line.find(' ');
    if (space == std::string_view::npos) return bad("expected '<base64> <rank>'");
    auto bytes = decode_base64(line.substr(0, space));
    if (!bytes.ok() || bytes->empty()) return bad("bad base64 token");
    const std::string rank_text(line.substr(space + 1));
    char* rank_end = nullptr;
    const unsigned long rank = std::strtoul(rank_text.c_str(), &rank_end, 10);
    if (rank_text.empty() || *rank_end != '\0' || rank != vocab.tokens.size()) {
      return bad("ranks must be 0, 1, 2, ... in order (got '" + rank_text + "')");
    }
    if (!rank_of.emplace(*bytes, static_cast<uint32_t>(rank)).second)
      return bad("token listed twice");
    vocab.tokens.push_back(*bytes);
  }
  vocab.eot_id = static_cast<uint32_t>(vocab.tokens.size());
  vocab.tokens.push_back(kEndOfText);

  // Note [Merges from ranks]: tiktoken keeps only ranks; token t (rank r) is the merge of the two
  // parts that BPE over t's bytes, using only ranks below r, ends with. Those pairs, in rank order,
  // are exactly GPT-2's merge list (the loaders test checks this against vocab.bpe).
  std::vector<std::string> parts;
  for (uint32_t r = 0; r < vocab.eot_id; ++r) {
    const std::string& t = vocab.tokens[r];
    if (t.size() == 1) continue;
    parts.clear();
    for (char c : t) parts.emplace_back(1, c);
    while (parts.size() > 2) {
      uint32_t best = UINT32_MAX;
      size_t best_i = 0;
      for (size_t i = 0; i + 1 < parts.size(); ++i) {
        auto it = rank_of.find(parts[i] + parts[i + 1]);
        if (it != rank_of.end() && it->second < best) best = it->second, best_i = i;
      }
      if (best >= r) break;
      parts[best_i] += parts[best_i + 1];
      parts.erase(parts.begin() + static_cast<long>(best_i) + 1);
    }
    auto left = rank_of.find(parts[0]);
    auto right = parts.size() == 2 ? rank_of.find(parts[1]) : rank_of.end();
    if (parts.size() != 2 || left == rank_of.end() || right == rank_of.end()) {
      return Status::InvalidArgument(path + ": token of rank " + std::to_string(r) +
                                     " is not one merge of two lower-ranked tokens");
    }
    vocab.merges.emplace_back(left->second, right->second);
  }
  vocab.sources = {{base_name(path), sha256_hex(text)}};
  return FromVocab(std::move(vocab));
}

StatusOr<Tokenizer> Tokenizer::Load(const std::string& dir) {
  const std::string encoder = dir + "/encoder.json", merges = dir + "/vocab.bpe";
  if (is_file(encoder) && is_file(merges)) return FromGpt2Files(encoder, merges);
  const std::string tiktoken = dir + "/r50k_base.tiktoken";
  if (is_file(tiktoken)) return FromTiktoken(tiktoken);
  return Status::NotFound(dir +
                          ": no tokenizer files (want encoder.json + vocab.bpe, or "
                          "r50k_base.tiktoken; `make assets` fetches them)");
}

std::string default_tokenizer_dir() {
  if (const char* assets = std::getenv("DTRN_ASSETS"); assets != nullptr && *assets != '\0') {
    return std::string(assets) + "/tokenizer";
  }
  auto is_dir = [](const std::string& p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  };
  if (is_dir(".assets/tokenizer")) return ".assets/tokenizer";
  char exe[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) {
    std::string path(exe, static_cast<size_t>(n));
    std::string candidate = path.substr(0, path.find_last_of('/')) + "/../../.assets/tokenizer";
    if (is_dir(candidate)) return candidate;
  }
  return "";
}

}  // namespace dtrn::data

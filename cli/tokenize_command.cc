// `dtrn tokenize`: text on stdin -> GPT-2 ids on stdout, or back with --decode. For checking data
// by hand and for tests; the same Tokenizer that `dtrn prep` uses.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "args.h"
#include "commands.h"
#include "dtrn/data/tokenizer.h"

namespace dtrn::cli {
namespace {

constexpr char kUsage[] =
    "usage: dtrn tokenize [--decode] [--tokenizer-dir DIR] < input > output\n"
    "\n"
    "Encodes the bytes on stdin with GPT-2's BPE (r50k_base) and prints the ids as one line of\n"
    "space-separated integers. With --decode, reads whitespace-separated ids and writes their "
    "bytes.\n"
    "\"<|endoftext|>\" in the input is encoded as plain text; invalid UTF-8 is encoded byte by "
    "byte and\n"
    "decodes back unchanged.\n"
    "\n"
    "  --decode             ids on stdin -> text on stdout\n"
    "  --tokenizer-dir DIR  folder with encoder.json + vocab.bpe, or r50k_base.tiktoken\n"
    "                       (default: $DTRN_ASSETS/tokenizer, else .assets/tokenizer of this "
    "checkout;\n"
    "                       `make assets` fetches it)\n";

}  // namespace

StatusOr<data::Tokenizer> load_tokenizer(const Args& args) {
  std::string dir = args.get_or("tokenizer-dir", data::default_tokenizer_dir());
  if (dir.empty()) {
    return Status::NotFound(
        "no tokenizer files: pass --tokenizer-dir, set DTRN_ASSETS, or run `make assets`");
  }
  return data::Tokenizer::Load(dir);
}

int run_tokenize(int argc, char** argv) {
  auto args =
      Args::Parse(argc, argv, 2, {{"help", false}, {"decode", false}, {"tokenizer-dir", true}});
  if (!args.ok()) return usage_error("tokenize", args.status().message());
  if (args->has("help")) {
    std::cout << kUsage;
    return 0;
  }
  if (!args->positional().empty()) {
    return usage_error("tokenize", "unexpected argument '" + args->positional()[0] + "'");
  }
  auto tokenizer = load_tokenizer(*args);
  if (!tokenizer.ok()) return fail("tokenize", tokenizer.status().message());

  std::ios::sync_with_stdio(false);
  std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  if (!args->has("decode")) {
    std::vector<uint32_t> ids = tokenizer->encode(input);
    std::string line;
    line.reserve(ids.size() * 6 + 1);
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i > 0) line += ' ';
      line += std::to_string(ids[i]);
    }
    line += '\n';
    std::fwrite(line.data(), 1, line.size(), stdout);
    return std::fflush(stdout) == 0 ? 0 : fail("tokenize", "cannot write stdout");
  }

  std::vector<uint32_t> ids;
  std::istringstream in(input);
  std::string word;
  while (in >> word) {
    char* end = nullptr;
    unsigned long id = std::strtoul(word.c_str(), &end, 10);
    if (*end != '\0' || word[0] == '-' || id > UINT32_MAX) {
      return fail("tokenize", "--decode: '" + word + "' is not a token id");
    }
    ids.push_back(static_cast<uint32_t>(id));
  }
  auto text = tokenizer->decode(ids);
  if (!text.ok()) return fail("tokenize", "--decode: " + text.status().message());
  std::fwrite(text->data(), 1, text->size(), stdout);
  return std::fflush(stdout) == 0 ? 0 : fail("tokenize", "cannot write stdout");
}

}  // namespace dtrn::cli

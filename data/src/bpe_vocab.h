// The loaders' common output (tokenizer_files.cc) and the input of Tokenizer::FromVocab
// (tokenizer.cc): the vocabulary as plain data, before any lookup tables are built. Private to
// dtrn_data.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "dtrn/data/tokenizer.h"

namespace dtrn::data {

struct BpeVocab {
  std::string name;                 // "gpt2"
  std::string origin;               // for error messages: the file(s) it came from
  std::vector<std::string> tokens;  // bytes of each id
  std::vector<std::pair<uint32_t, uint32_t>> merges;  // (left id, right id), by rank
  uint32_t eot_id = 0;
  std::vector<TokenizerSource> sources;
};

}  // namespace dtrn::data

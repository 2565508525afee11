// meta.json: the description of a `dtrn prep` output folder, and its commit marker (prep writes it
// last, so a folder without it is incomplete). Schema (format_version 1), keys in this order:
//   format, format_version
//   tokenizer: {name, identity, vocab_size, eot_id, files: [{name, sha256}]}
//   val_docs: the patterns that chose the validation documents
//   splits: {train: SPLIT, val: SPLIT}, SPLIT = {documents, tokens, bytes, bytes_per_token,
//            shards: [{file, tokens, sha256}]}   (tokens count the <|endoftext|> before each
//            document; bytes are the documents' bytes, so bits per byte = total CE in bits / bytes)
//   documents: [{path, split, bytes, tokens, sha256}] in stream order (tokens without
//   <|endoftext|>)
// docs/data.md describes it for users. Plain data; thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "dtrn/data/tokenizer.h"
#include "dtrn/runtime/status.h"

namespace dtrn::data {

inline constexpr char kMetaFileName[] = "meta.json";
inline constexpr char kMetaFormat[] = "dtrn-token-shards";
inline constexpr int kMetaFormatVersion = 1;

struct ShardEntry {
  std::string file;  // name inside the folder: "train_000000.bin"
  uint64_t tokens = 0;
  std::string sha256;  // of the whole file
};

struct SplitStats {
  uint64_t documents = 0;
  uint64_t tokens = 0;
  uint64_t bytes = 0;
  std::vector<ShardEntry> shards;
  double bytes_per_token() const { return tokens == 0 ? 0.0 : double(bytes) / double(tokens); }
};

struct DocumentEntry {
  std::string path;   // as given to prep
  std::string split;  // "train" or "val"
  uint64_t bytes = 0;
  uint64_t tokens = 0;
  std::string sha256;
};

struct DatasetMeta {
  std::string tokenizer_name;
  std::string tokenizer_identity;
  uint32_t vocab_size = 0;
  uint32_t eot_id = 0;
  std::vector<TokenizerSource> tokenizer_files;
  std::vector<std::string> val_patterns;
  SplitStats train, val;
  std::vector<DocumentEntry> documents;

  // "train" or "val"; nullptr for any other name.
  const SplitStats* split(std::string_view name) const;
};

// The JSON text of meta.json (2-space indent, trailing newline): a pure function of `meta`.
std::string meta_to_json(const DatasetMeta& meta);
// Reads and validates dir/meta.json; errors name the file and the key.
StatusOr<DatasetMeta> read_meta(const std::string& dir);

}  // namespace dtrn::data

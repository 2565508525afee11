// GPT-2's byte-level BPE tokenizer (OpenAI's r50k_base): 50257 ids, <|endoftext|> = 50256.
//
// Text is split by GPT-2's pre-tokenizer (pretokenize.h), each piece's bytes are merged by rank,
// and decoding concatenates the tokens' bytes, so decode(encode(x)) == x for every byte string
// (invalid UTF-8 included: see Note [Invalid UTF-8] in pretokenize.h). The vocabulary loads from
// either of its two public forms, GPT-2's encoder.json + vocab.bpe or tiktoken's
// r50k_base.tiktoken; both give the same tables and the same identity() (the tiktoken loader
// rebuilds the merge list from the ranks).
//
// encode() treats "<|endoftext|>" in the text as ordinary characters; the id 50256 only ever comes
// from the caller (dtrn prep puts it between documents).
//
// Thread-safety: a Tokenizer is immutable and may be shared by any number of threads. Each thread
// keeps its own bounded cache of piece encodings (the key to speed: most pieces are frequent
// words), so no locks are taken. Copies are cheap and share the tables.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dtrn/runtime/status.h"

namespace dtrn::data {

struct BpeVocab;  // the loaders' common output, private to dtrn_data

// One file a tokenizer was loaded from, for provenance in meta.json.
struct TokenizerSource {
  std::string name;    // file name without folder: "encoder.json"
  std::string sha256;  // hex
};

class Tokenizer {
 public:
  // GPT-2's two files. vocab.bpe's merges, in order, are the ranks.
  static StatusOr<Tokenizer> FromGpt2Files(const std::string& encoder_json,
                                           const std::string& vocab_bpe);
  // tiktoken's "<base64 bytes> <rank>" file; <|endoftext|> is appended as the next id.
  static StatusOr<Tokenizer> FromTiktoken(const std::string& path);
  // dir/encoder.json + dir/vocab.bpe when both exist, else dir/r50k_base.tiktoken.
  static StatusOr<Tokenizer> Load(const std::string& dir);

  // Appends the ids of `text` to `ids`.
  void encode(std::string_view text, std::vector<uint32_t>* ids) const;
  std::vector<uint32_t> encode(std::string_view text) const;
  // The bytes of the ids, concatenated. An id >= vocab_size() is an InvalidArgument naming it.
  StatusOr<std::string> decode(std::span<const uint32_t> ids) const;
  std::string_view token_bytes(uint32_t id) const;

  uint32_t vocab_size() const;
  uint32_t eot_id() const;
  // "gpt2": the vocabulary's name.
  const std::string& name() const;
  // SHA-256 (hex) of the vocabulary, the merge list, <|endoftext|> and the pre-tokenizer version:
  // two tokenizers with equal identities encode every text alike. Shards and meta.json record it.
  const std::string& identity() const;
  const std::vector<TokenizerSource>& sources() const;

 private:
  struct Tables;
  explicit Tokenizer(std::shared_ptr<const Tables> tables) : tables_(std::move(tables)) {}
  static StatusOr<Tokenizer> FromVocab(BpeVocab vocab);

  void encode_piece(std::string_view piece, std::vector<uint32_t>* ids) const;

  std::shared_ptr<const Tables> tables_;
};

// Where tokenizer files are looked for when no folder is given: $DTRN_ASSETS/tokenizer when
// DTRN_ASSETS is set, else the first of ./.assets/tokenizer and <folder of this
// executable>/../../.assets/tokenizer (build/bin/dtrn -> repo root) that exists; "" when none does.
std::string default_tokenizer_dir();

}  // namespace dtrn::data

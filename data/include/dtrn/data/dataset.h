// One split ("train" or "val") of a `dtrn prep` folder, opened for reading: meta.json read, every
// shard memory-mapped and checked against it. The loader (loader.h) samples windows from it.
//
// Open() fails with one line naming the file and the problem: no meta.json (not a prep folder, or
// prep did not finish), a missing, truncated or corrupt shard (magic, version, size, checksum), or
// shards made by another tokenizer than meta.json names or than the caller expects, and a token id
// not below meta.json's vocab_size (naming the shard and the token offset; every id is checked once,
// here, so that the loader and evaluation never hand the model an id it cannot take).
//
// Thread-safety: immutable after Open; share it (shared_ptr) between loaders and threads.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "dtrn/data/dataset_meta.h"
#include "dtrn/data/shard.h"
#include "dtrn/runtime/status.h"

namespace dtrn::data {

struct DatasetOptions {
  // Tokenizer::identity() the caller trains with; empty accepts whatever meta.json names.
  std::string expected_tokenizer_identity;
  // Hash every shard against meta.json (reads all bytes once; about 1 s per GB).
  bool verify_checksums = true;
};

class TokenDataset {
 public:
  static StatusOr<std::shared_ptr<const TokenDataset>> Open(const std::string& dir,
                                                            const std::string& split,
                                                            const DatasetOptions& options = {});

  const std::string& dir() const { return dir_; }
  const std::string& split() const { return split_; }
  const DatasetMeta& meta() const { return meta_; }
  const std::vector<ShardFile>& shards() const { return shards_; }
  uint64_t num_tokens() const { return num_tokens_; }
  // Every token of the split, shards in order (evaluation reads a split as one stream).
  std::vector<int32_t> all_tokens() const;

 private:
  TokenDataset() = default;

  std::string dir_, split_;
  DatasetMeta meta_;
  std::vector<ShardFile> shards_;
  uint64_t num_tokens_ = 0;
};

}  // namespace dtrn::data

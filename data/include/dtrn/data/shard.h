// Token shards: the files `dtrn prep` writes and the loader memory-maps.
//
// Layout (all integers little-endian), 128-byte header then the tokens:
//   offset  0  char[8]   magic "DTRNTOKS"
//   offset  8  uint32    format version (kShardVersion)
//   offset 12  uint32    dtype (1 = uint16; the only one: GPT-2 ids fit)
//   offset 16  uint64    token count N
//   offset 24  char[64]  identity of the tokenizer that made the tokens (Tokenizer::identity(),
//   hex) offset 88  zeros up to 128 offset 128 uint16[N] tokens
// The file size must be exactly 128 + 2N. Checksums live in meta.json (see dataset.h), so a shard
// is verified against the folder it belongs to.
//
// Thread-safety: ShardFile is immutable after Open and may be read from any thread.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "dtrn/runtime/status.h"

namespace dtrn::data {

inline constexpr char kShardMagic[8] = {'D', 'T', 'R', 'N', 'T', 'O', 'K', 'S'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr uint32_t kShardDtypeUint16 = 1;
inline constexpr size_t kShardHeaderBytes = 128;

// Writes a shard through a temporary name and a rename (never a half-written file under `path`).
// Returns the SHA-256 (hex) of the whole file.
StatusOr<std::string> write_shard(const std::string& path, std::span<const uint16_t> tokens,
                                  const std::string& tokenizer_identity);

// A read-only memory map of one shard, its header checked.
class ShardFile {
 public:
  // Fails with one line naming `path` and the problem: missing, not a shard (magic), a version or
  // dtype this build does not read, or a size that disagrees with the header (truncated or padded).
  static StatusOr<ShardFile> Open(const std::string& path);

  ShardFile(ShardFile&& other) noexcept;
  ShardFile& operator=(ShardFile&& other) noexcept;
  ShardFile(const ShardFile&) = delete;
  ShardFile& operator=(const ShardFile&) = delete;
  ~ShardFile();

  const std::string& path() const { return path_; }
  uint64_t num_tokens() const { return num_tokens_; }
  const uint16_t* tokens() const { return tokens_; }
  const std::string& tokenizer_identity() const { return tokenizer_identity_; }
  // SHA-256 (hex) of the whole file, header included; reads every byte.
  std::string sha256() const;

 private:
  ShardFile() = default;

  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const uint16_t* tokens_ = nullptr;
  uint64_t num_tokens_ = 0;
  std::string tokenizer_identity_;
};

}  // namespace dtrn::data

// SHA-256 (FIPS 180-4): the content digests dtrn writes next to its files (token shards and
// documents in a dataset's meta.json, the tokenizer's identity, every file of a checkpoint
// manifest). Incremental: update() any number of times, then hex_digest() once; the object is spent
// afterwards. One object belongs to one thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dtrn {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void update(std::string_view s) { update(s.data(), s.size()); }
  // 64 lowercase hex digits, as sha256sum prints them.
  std::string hex_digest();

 private:
  void compress(const uint8_t* block);

  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buffer_;
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

// The hex digest of `data` in one call.
std::string sha256_hex(std::string_view data);

}  // namespace dtrn

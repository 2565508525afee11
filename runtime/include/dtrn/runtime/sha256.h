// SHA-256 (FIPS 180-4): the content digests dtrn writes next to its files (token shards and
// documents in a dataset's meta.json, the tokenizer's identity, every file of a checkpoint
// manifest). Incremental: update() any number of times, then hex_digest() once; the object is spent
// afterwards. One object belongs to one thread. Where the CPU has the x86 SHA extensions the blocks
// are compressed with them (about 2 GB/s a core instead of 0.25), unless the object is made
// without.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dtrn {

class Sha256 {
 public:
  explicit Sha256(bool allow_accelerated = true);
  // Whether this CPU has the SHA extensions that Sha256 uses when allowed.
  static bool accelerated_available();
  void update(const void* data, size_t size);
  void update(std::string_view s) { update(s.data(), s.size()); }
  // 64 lowercase hex digits, as sha256sum prints them.
  std::string hex_digest();

 private:
  std::array<uint32_t, 8> h_;
  void (*compress_)(uint32_t* h, const uint8_t* blocks, size_t count);
  std::array<uint8_t, 64> buffer_;
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

// The hex digest of `data` in one call.
std::string sha256_hex(std::string_view data);

}  // namespace dtrn

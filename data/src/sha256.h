// SHA-256 (FIPS 180-4), for the file and shard checksums in meta.json and the tokenizer's identity.
// Private to dtrn_data. Incremental; not thread-safe per object.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dtrn::data {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void update(std::string_view s) { update(s.data(), s.size()); }
  std::array<uint8_t, 32> digest();  // ends the hash; the object is spent afterwards
  std::string hex_digest();

 private:
  void compress(const uint8_t* block);

  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buffer_;
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

std::string sha256_hex(std::string_view data);
std::string to_hex(const uint8_t* bytes, size_t n);

}  // namespace dtrn::data

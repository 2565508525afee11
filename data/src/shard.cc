#include "dtrn/data/shard.h"

#include <sys/mman.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <utility>

#include "dtrn/runtime/file_io.h"
#include "dtrn/runtime/sha256.h"

namespace dtrn::data {

// The header and tokens are written and mapped as raw little-endian memory.
static_assert(std::endian::native == std::endian::little,
              "dtrn shards assume a little-endian host");

namespace {

constexpr size_t kIdentityOffset = 24;
constexpr size_t kIdentityBytes = 64;

template <typename T>
void put(char* header, size_t offset, T value) {
  std::memcpy(header + offset, &value, sizeof value);
}

template <typename T>
T get(const char* header, size_t offset) {
  T value;
  std::memcpy(&value, header + offset, sizeof value);
  return value;
}

}  // namespace

StatusOr<std::string> write_shard(const std::string& path, std::span<const uint16_t> tokens,
                                  const std::string& tokenizer_identity) {
  DTRN_CHECK(tokenizer_identity.size() == kIdentityBytes,
             "tokenizer identity must be 64 hex chars");
  std::string file(kShardHeaderBytes + tokens.size_bytes(), '\0');
  std::memcpy(file.data(), kShardMagic, sizeof kShardMagic);
  put<uint32_t>(file.data(), 8, kShardVersion);
  put<uint32_t>(file.data(), 12, kShardDtypeUint16);
  put<uint64_t>(file.data(), 16, tokens.size());
  std::memcpy(file.data() + kIdentityOffset, tokenizer_identity.data(), kIdentityBytes);
  if (!tokens.empty())
    std::memcpy(file.data() + kShardHeaderBytes, tokens.data(), tokens.size_bytes());
  DTRN_RETURN_IF_ERROR(write_file_atomic(path, file));
  return sha256_hex(file);
}

StatusOr<ShardFile> ShardFile::Open(const std::string& path) {
  auto file = open_regular_file(path);
  if (!file.ok()) return file.status();
  const int fd = file->fd;
  const size_t size = static_cast<size_t>(file->size);
  if (size < kShardHeaderBytes) {
    ::close(fd);
    return Status::DataLoss(path + ": truncated shard: " + std::to_string(size) +
                            " bytes, less than the " + std::to_string(kShardHeaderBytes) +
                            "-byte header");
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  int map_err = errno;
  ::close(fd);  // the mapping keeps the file open
  if (map == MAP_FAILED) return errno_status(path, map_err);

  ShardFile shard;
  shard.path_ = path;
  shard.map_ = map;
  shard.map_bytes_ = size;
  const char* header = static_cast<const char*>(map);
  if (std::memcmp(header, kShardMagic, sizeof kShardMagic) != 0) {
    return Status::DataLoss(path + ": not a dtrn token shard (bad magic)");
  }
  const uint32_t version = get<uint32_t>(header, 8);
  if (version != kShardVersion) {
    return Status::DataLoss(path + ": shard format version " + std::to_string(version) +
                            ", this build reads version " + std::to_string(kShardVersion));
  }
  const uint32_t dtype = get<uint32_t>(header, 12);
  if (dtype != kShardDtypeUint16) {
    return Status::DataLoss(path + ": unknown token dtype " + std::to_string(dtype) +
                            " (want 1 = uint16)");
  }
  shard.num_tokens_ = get<uint64_t>(header, 16);
  const uint64_t want = kShardHeaderBytes + 2 * shard.num_tokens_;
  if (shard.num_tokens_ > (size - kShardHeaderBytes) / 2 + 1 || want != size) {
    return Status::DataLoss(path + ": size " + std::to_string(size) +
                            " bytes does not match the header's " +
                            std::to_string(shard.num_tokens_) + " tokens (want " +
                            std::to_string(want) + "): truncated or corrupt");
  }
  shard.tokenizer_identity_.assign(header + kIdentityOffset, kIdentityBytes);
  shard.tokens_ = reinterpret_cast<const uint16_t*>(header + kShardHeaderBytes);
  return shard;
}

ShardFile::ShardFile(ShardFile&& other) noexcept { *this = std::move(other); }

ShardFile& ShardFile::operator=(ShardFile&& other) noexcept {
  if (this != &other) {
    if (map_ != nullptr) ::munmap(map_, map_bytes_);
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    tokens_ = std::exchange(other.tokens_, nullptr);
    num_tokens_ = std::exchange(other.num_tokens_, 0);
    tokenizer_identity_ = std::move(other.tokenizer_identity_);
  }
  return *this;
}

ShardFile::~ShardFile() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
}

std::string ShardFile::sha256() const {
  Sha256 h;
  h.update(map_, map_bytes_);
  return h.hex_digest();
}

}  // namespace dtrn::data

#include "disk_bandwidth.h"

#include <algorithm>
#include <chrono>
#include <vector>

namespace dtrn::train {

StatusOr<double> sequential_write_mb_s(Env* env, const std::string& path, uint64_t bytes) {
  if (bytes == 0) return Status::InvalidArgument(path + ": a bandwidth measurement needs bytes to write");
  constexpr uint64_t kPiece = uint64_t{64} << 20;
  std::vector<uint64_t> buffer(std::min(bytes, kPiece) / sizeof(uint64_t) + 1);
  uint64_t x = 0x9e3779b97f4a7c15ull;  // xorshift64
  for (auto& v : buffer) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v = x;
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto file = env->new_writable_file(path);
  if (!file.ok()) return file.status();
  Status written = Status::Ok();
  for (uint64_t done = 0; done < bytes && written.ok(); done += kPiece) {
    written = (*file)->append(buffer.data(), std::min(kPiece, bytes - done));
  }
  if (written.ok()) written = (*file)->sync();
  if (written.ok()) written = (*file)->close();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const Status removed = env->remove_file(path);
  if (!written.ok()) return written;
  if (!removed.ok()) return removed;
  return static_cast<double>(bytes) / 1e6 / seconds;
}

}  // namespace dtrn::train

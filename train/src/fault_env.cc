#include "fault_env.h"

#include <algorithm>
#include <utility>

namespace dtrn::train {
namespace {

// Forwards to the real file and fails the one way it was armed to.
class FaultyFile final : public WritableFile {
 public:
  FaultyFile(std::unique_ptr<WritableFile> base, FaultEnv* env) : base_(std::move(base)), env_(env) {}

  Status append(const void* data, size_t size) override {
    FaultEnv::Armed a;
    if (!limited_ && env_->take(path(), {Fault::kDiskFull, Fault::kShortWrite}, &a)) {
      limited_ = true;
      limit_ = a;
    }
    if (limited_ && written_ + size > limit_.after_bytes) {
      const size_t fits = limit_.after_bytes > written_ ? limit_.after_bytes - written_ : 0;
      if (fits > 0) DTRN_RETURN_IF_ERROR(base_->append(data, fits));
      written_ += fits;
      limited_ = false;  // fired: later appends would be the caller ignoring the error
      return Status::IoError(path() + (limit_.fault == Fault::kDiskFull
                                           ? ": write: No space left on device"
                                           : ": short write: " + std::to_string(fits) + " of " +
                                                 std::to_string(size) + " bytes written"));
    }
    written_ += size;
    return base_->append(data, size);
  }
  Status sync() override {
    FaultEnv::Armed a;
    if (env_->take(path(), {Fault::kSyncFails}, &a)) {
      return Status::IoError(path() + ": fsync: Input/output error");
    }
    return base_->sync();
  }
  Status close() override { return base_->close(); }
  const std::string& path() const override { return base_->path(); }

 private:
  std::unique_ptr<WritableFile> base_;
  FaultEnv* env_;
  bool limited_ = false;
  FaultEnv::Armed limit_{};
  uint64_t written_ = 0;
};

}  // namespace

void FaultEnv::arm(Fault fault, const std::string& path_part, uint64_t after_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  armed_.push_back({fault, path_part, after_bytes});
}

size_t FaultEnv::armed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return armed_.size();
}

bool FaultEnv::take(const std::string& path, std::initializer_list<Fault> kinds, Armed* out) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = armed_.begin(); it != armed_.end(); ++it) {
    if (std::find(kinds.begin(), kinds.end(), it->fault) == kinds.end()) continue;
    if (path.find(it->path_part) == std::string::npos) continue;
    *out = *it;
    armed_.erase(it);
    return true;
  }
  return false;
}

StatusOr<std::unique_ptr<WritableFile>> FaultEnv::new_writable_file(const std::string& path) {
  auto file = base_->new_writable_file(path);
  if (!file.ok()) return file.status();
  return std::unique_ptr<WritableFile>(new FaultyFile(std::move(*file), this));
}

Status FaultEnv::rename(const std::string& from, const std::string& to) {
  Armed a;
  if (take(to, {Fault::kRenameFails}, &a)) {
    return Status::IoError("cannot rename " + from + " to " + to + ": Input/output error");
  }
  return base_->rename(from, to);
}

Status FaultEnv::sync_dir(const std::string& path) {
  Armed a;
  if (take(path, {Fault::kSyncDirFails}, &a)) return Status::IoError(path + ": fsync: Input/output error");
  return base_->sync_dir(path);
}

}  // namespace dtrn::train

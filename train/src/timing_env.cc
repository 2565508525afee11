#include "timing_env.h"

#include <chrono>
#include <utility>

namespace dtrn::train {
namespace {

// Runs f() and adds its wall time to `total`.
template <typename F>
auto timed(std::atomic<int64_t>& total, F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  auto result = f();
  total +=
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  return result;
}

double ms(int64_t ns) { return static_cast<double>(ns) / 1e6; }

}  // namespace

class TimedFile final : public WritableFile {
 public:
  TimedFile(std::unique_ptr<WritableFile> base, TimingEnv* env)
      : base_(std::move(base)), env_(env) {}
  Status append(const void* data, size_t size) override {
    return timed(env_->append_ns_, [&] { return base_->append(data, size); });
  }
  Status sync() override {
    return timed(env_->fsync_ns_, [&] { return base_->sync(); });
  }
  Status close() override {
    return timed(env_->other_ns_, [&] { return base_->close(); });
  }
  const std::string& path() const override { return base_->path(); }

 private:
  std::unique_ptr<WritableFile> base_;
  TimingEnv* env_;
};

FileTimes TimingEnv::take() {
  return {ms(append_ns_.exchange(0)), ms(fsync_ns_.exchange(0)), ms(other_ns_.exchange(0))};
}

StatusOr<std::unique_ptr<WritableFile>> TimingEnv::new_writable_file(const std::string& path) {
  auto file = timed(other_ns_, [&] { return base_->new_writable_file(path); });
  if (!file.ok()) return file.status();
  return std::unique_ptr<WritableFile>(new TimedFile(std::move(*file), this));
}

Status TimingEnv::rename(const std::string& from, const std::string& to) {
  return timed(other_ns_, [&] { return base_->rename(from, to); });
}

Status TimingEnv::remove_file(const std::string& path) {
  return timed(other_ns_, [&] { return base_->remove_file(path); });
}

Status TimingEnv::remove_tree(const std::string& path) {
  return timed(other_ns_, [&] { return base_->remove_tree(path); });
}

Status TimingEnv::create_dirs(const std::string& path) {
  return timed(other_ns_, [&] { return base_->create_dirs(path); });
}

Status TimingEnv::sync_dir(const std::string& path) {
  return timed(fsync_ns_, [&] { return base_->sync_dir(path); });
}

StatusOr<std::vector<std::string>> TimingEnv::list_dir(const std::string& path) {
  return timed(other_ns_, [&] { return base_->list_dir(path); });
}

}  // namespace dtrn::train

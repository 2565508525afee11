// An Env that forwards to another and adds up the wall time spent in each kind of file-system call,
// for `dtrn bench --checkpoint-every`: where a save's background write goes (appends into the page
// cache, fsyncs of files and folders, renames and removals), the rest of the write being the work
// between the calls (hashing, encoding). Thread-safe: the asynchronous saver writes from its own
// thread.
#pragma once

#include <atomic>
#include <cstdint>

#include "env.h"

namespace dtrn::train {

class TimedFile;

struct FileTimes {
  double append_ms = 0;  // WritableFile::append
  double fsync_ms = 0;   // WritableFile::sync and Env::sync_dir
  double other_ms = 0;   // creations, closes, renames, removals, listings
};

class TimingEnv final : public Env {
 public:
  explicit TimingEnv(Env* base) : base_(base) {}

  // The times since the last take(), which starts the next account.
  FileTimes take();

  StatusOr<std::unique_ptr<WritableFile>> new_writable_file(const std::string& path) override;
  Status rename(const std::string& from, const std::string& to) override;
  Status remove_file(const std::string& path) override;
  Status remove_tree(const std::string& path) override;
  Status create_dirs(const std::string& path) override;
  Status sync_dir(const std::string& path) override;
  StatusOr<std::vector<std::string>> list_dir(const std::string& path) override;
  StatusOr<uint64_t> file_size(const std::string& path) override { return base_->file_size(path); }
  bool exists(const std::string& path) override { return base_->exists(path); }
  bool is_dir(const std::string& path) override { return base_->is_dir(path); }

 private:
  friend class TimedFile;  // the files it hands out add to its totals
  Env* base_;
  std::atomic<int64_t> append_ns_{0}, fsync_ns_{0}, other_ns_{0};  // nanoseconds by kind
};

}  // namespace dtrn::train

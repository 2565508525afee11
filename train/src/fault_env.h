// An Env that forwards to another and fails on cue, for tests of the checkpoint commit: each armed
// fault fires on the first matching operation whose path contains `path_part`, once, and then disarms
// (so a test sees exactly which step failed, and a retry succeeds). The failures are those a real disk
// gives: a failed fsync (EIO), a full disk (ENOSPC after `after_bytes` bytes of a file reached the
// file), a short write (part of the bytes written, then an error), a failed rename. Thread-safe: the
// asynchronous saver writes from its own thread.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "env.h"

namespace dtrn::train {

enum class Fault { kSyncFails, kDiskFull, kShortWrite, kRenameFails, kSyncDirFails };

class FaultEnv final : public Env {
 public:
  explicit FaultEnv(Env* base) : base_(base) {}

  // kDiskFull and kShortWrite use `after_bytes`: the bytes of the file that reach it before the error.
  void arm(Fault fault, const std::string& path_part, uint64_t after_bytes = 0);
  // Faults armed and not yet fired.
  size_t armed() const;

  StatusOr<std::unique_ptr<WritableFile>> new_writable_file(const std::string& path) override;
  Status rename(const std::string& from, const std::string& to) override;
  Status remove_file(const std::string& path) override { return base_->remove_file(path); }
  Status remove_tree(const std::string& path) override { return base_->remove_tree(path); }
  Status create_dirs(const std::string& path) override { return base_->create_dirs(path); }
  Status sync_dir(const std::string& path) override;
  StatusOr<std::vector<std::string>> list_dir(const std::string& path) override {
    return base_->list_dir(path);
  }
  StatusOr<uint64_t> file_size(const std::string& path) override { return base_->file_size(path); }
  bool exists(const std::string& path) override { return base_->exists(path); }
  bool is_dir(const std::string& path) override { return base_->is_dir(path); }

  struct Armed {
    Fault fault;
    std::string path_part;
    uint64_t after_bytes;
  };
  // Removes and returns the first armed fault of a kind in `kinds` whose path part `path` contains.
  bool take(const std::string& path, std::initializer_list<Fault> kinds, Armed* out);

 private:
  Env* base_;
  mutable std::mutex mu_;
  std::vector<Armed> armed_;
};

}  // namespace dtrn::train

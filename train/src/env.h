// The file system as checkpoints see it, after leveldb's Env: every write, sync, rename and removal of
// a checkpoint goes through one Env, so tests substitute one that fails on cue (fault_env.h) and the
// commit protocol (checkpoint_commit.h) is exercised against failed fsyncs, full disks, short writes and
// failed renames. Reads are not routed here: corruption is tested by editing files, which needs no
// substitute. Every error is one Status naming the path and the problem.
// Env::posix() is the process-wide real file system; it is thread-safe. A WritableFile belongs to one
// thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dtrn/runtime/status.h"

namespace dtrn::train {

// A file being written from its start. Destroying it without close() closes it without syncing.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  // All `size` bytes, or an error (a short write is an error, never a silent truncation).
  virtual Status append(const void* data, size_t size) = 0;
  virtual Status sync() = 0;  // fsync(2): the bytes survive a crash
  virtual Status close() = 0;
  virtual const std::string& path() const = 0;
};

class Env {
 public:
  virtual ~Env() = default;
  static Env* posix();

  // Creates or truncates.
  virtual StatusOr<std::unique_ptr<WritableFile>> new_writable_file(const std::string& path) = 0;
  // rename(2): atomic; it survives a crash only once the folder is synced.
  virtual Status rename(const std::string& from, const std::string& to) = 0;
  virtual Status remove_file(const std::string& path) = 0;
  // The folder and everything in it; a missing path is not an error.
  virtual Status remove_tree(const std::string& path) = 0;
  // With its parents; an existing folder is not an error.
  virtual Status create_dirs(const std::string& path) = 0;
  // fsync(2) of the folder: makes its entries (creations, renames, removals) survive a crash.
  virtual Status sync_dir(const std::string& path) = 0;
  // Entry names (not paths), sorted.
  virtual StatusOr<std::vector<std::string>> list_dir(const std::string& path) = 0;
  virtual StatusOr<uint64_t> file_size(const std::string& path) = 0;
  virtual bool exists(const std::string& path) = 0;
  virtual bool is_dir(const std::string& path) = 0;
};

}  // namespace dtrn::train

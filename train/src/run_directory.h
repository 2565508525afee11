// The run directory of one `dtrn train` process: the folder is locked for the process's lifetime, a fresh
// run never takes over a folder that holds anything, and a run that fails before it starts leaves no
// trace of itself.
//
// Open() refuses, with one line naming the folder:
//   - a fresh run (resume = false) into a folder that exists and is not empty, whatever it holds (valid or
//     corrupt checkpoints, only a config.yaml or metrics.jsonl): that state is another run's, and only
//     --resume may continue it;
//   - any run into a folder another live process holds: RUN/.lock is locked with flock(2), which the kernel
//     releases when that process ends, also by kill -9, so a crashed run never blocks its own resume.
// A folder that Open() created is removed again by the destructor unless started() was called: a start
// that fails (bad data path, refused resume) leaves no empty run directory behind. Nothing else in the
// folder is ever removed. One object per process and folder; not thread-safe.
#pragma once

#include <memory>
#include <string>

#include "dtrn/runtime/status.h"

namespace dtrn::train {

class RunDirectory {
 public:
  static StatusOr<std::unique_ptr<RunDirectory>> Open(const std::string& path, bool resume);
  ~RunDirectory();
  RunDirectory(const RunDirectory&) = delete;
  RunDirectory& operator=(const RunDirectory&) = delete;

  const std::string& path() const { return path_; }
  // Training has begun: the folder stays, whatever happens next.
  void started() { started_ = true; }
  bool is_started() const { return started_; }

 private:
  RunDirectory(std::string path, bool created) : path_(std::move(path)), created_(created) {}

  std::string path_;
  bool created_;
  bool started_ = false;
  int lock_fd_ = -1;
};

}  // namespace dtrn::train

#include "run_directory.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include "dtrn/runtime/file_io.h"

namespace dtrn::train {
namespace fs = std::filesystem;
namespace {

constexpr char kLockName[] = ".lock";

// The first few entries of `dir` other than the lock file, for the refusal message; empty when there
// are none.
std::string contents(const std::string& dir) {
  std::error_code ec;
  std::string names;
  int shown = 0, total = 0;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    if (name == kLockName) continue;
    if (entry.is_directory(ec)) name += "/";
    if (shown < 4) names += (shown++ ? ", " : "") + name;
    ++total;
  }
  if (total > shown) names += ", ...";
  return names;
}

Status refuse_occupied(const std::string& path, const std::string& held) {
  return Status::FailedPrecondition(path + " already holds " + held +
                                    ": pass --resume to continue the run in it, or choose a new --run-dir "
                                    "(a fresh run never writes over another run's files)");
}

}  // namespace

StatusOr<std::unique_ptr<RunDirectory>> RunDirectory::Open(const std::string& path, bool resume) {
  std::error_code ec;
  const bool existed = fs::exists(path, ec);
  if (existed && !fs::is_directory(path, ec)) {
    return Status::FailedPrecondition(path + ": exists and is not a folder (--run-dir names a folder)");
  }
  // Checked before anything is created, so that a refused start adds nothing to the folder.
  if (existed && !resume) {
    const std::string held = contents(path);
    if (!held.empty()) return refuse_occupied(path, held);
  }
  if (!existed) {
    fs::create_directories(path, ec);
    if (ec) return Status::IoError(path + ": cannot create the run directory: " + ec.message());
  }
  std::unique_ptr<RunDirectory> dir(new RunDirectory(path, !existed));
  const std::string lock_path = path + "/" + kLockName;
  dir->lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (dir->lock_fd_ < 0) return errno_status(lock_path, errno);
  if (::flock(dir->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    std::string holder;
    if (err == EWOULDBLOCK) {
      auto text = read_file(lock_path);
      if (text.ok() && !text->empty()) holder = " (pid " + *text + ")";
      return Status::FailedPrecondition(path + " is in use by another dtrn train" + holder +
                                        ": two trainers cannot share one run directory");
    }
    return errno_status(lock_path, err);
  }
  // Who holds the lock, for the message above; the lock itself is the flock, not this text.
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(dir->lock_fd_, 0) != 0 || ::pwrite(dir->lock_fd_, pid.data(), pid.size(), 0) < 0) {
    return errno_status(lock_path, errno);
  }
  // Another fresh run may have filled the folder between the first look and the lock.
  if (existed && !resume) {
    const std::string held = contents(path);
    if (!held.empty()) return refuse_occupied(path, held);
  }
  return dir;
}

RunDirectory::~RunDirectory() {
  if (created_ && !started_) {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

}  // namespace dtrn::train

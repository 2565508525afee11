// Env::posix(): the real file system, through dtrn/runtime/file_io.h and std::filesystem.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "dtrn/runtime/file_io.h"
#include "env.h"
#include "file_io.h"

namespace dtrn::train {
namespace {

namespace fs = std::filesystem;

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }
  Status append(const void* data, size_t size) override {
    if (fd_ < 0) return Status::Internal(path_ + ": append after close");
    return write_all(fd_, path_, data, size);
  }
  Status sync() override {
    if (fd_ < 0) return Status::Internal(path_ + ": sync after close");
    if (::fsync(fd_) != 0) return Status::IoError(path_ + ": fsync: " + std::strerror(errno));
    return Status::Ok();
  }
  Status close() override {
    if (fd_ < 0) return Status::Internal(path_ + ": closed twice");
    if (::close(std::exchange(fd_, -1)) != 0) {
      return Status::IoError(path_ + ": close: " + std::strerror(errno));
    }
    return Status::Ok();
  }
  const std::string& path() const override { return path_; }

 private:
  std::string path_;
  int fd_;
};

class PosixEnv final : public Env {
 public:
  StatusOr<std::unique_ptr<WritableFile>> new_writable_file(const std::string& path) override {
    auto fd = create_file(path);
    if (!fd.ok()) return fd.status();
    return std::unique_ptr<WritableFile>(new PosixWritableFile(path, *fd));
  }
  Status rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return Status::IoError("cannot rename " + from + " to " + to + ": " + std::strerror(errno));
    }
    return Status::Ok();
  }
  Status remove_file(const std::string& path) override {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return Status::IoError(path + ": cannot remove: " + std::strerror(errno));
    }
    return Status::Ok();
  }
  Status remove_tree(const std::string& path) override {
    std::error_code ec;
    fs::remove_all(path, ec);
    return ec ? error_code_status(path, ec) : Status::Ok();
  }
  Status create_dirs(const std::string& path) override {
    std::error_code ec;
    fs::create_directories(path, ec);
    if (ec) return error_code_status(path, ec);
    if (!fs::is_directory(path, ec)) return Status::IoError(path + ": exists and is not a folder");
    return Status::Ok();
  }
  Status sync_dir(const std::string& path) override { return dtrn::sync_dir(path); }
  StatusOr<std::vector<std::string>> list_dir(const std::string& path) override {
    std::error_code ec;
    std::vector<std::string> names;
    for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
      names.push_back(it->path().filename().string());
    }
    if (ec) return error_code_status(path, ec);
    std::sort(names.begin(), names.end());
    return names;
  }
  StatusOr<uint64_t> file_size(const std::string& path) override {
    std::error_code ec;
    const uint64_t bytes = fs::file_size(path, ec);
    if (ec) return error_code_status(path, ec);
    return bytes;
  }
  bool exists(const std::string& path) override {
    std::error_code ec;
    return fs::exists(path, ec);
  }
  bool is_dir(const std::string& path) override {
    std::error_code ec;
    return fs::is_directory(path, ec);
  }
};

}  // namespace

Env* Env::posix() {
  static PosixEnv env;
  return &env;
}

}  // namespace dtrn::train

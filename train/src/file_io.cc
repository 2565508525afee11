#include "file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

namespace dtrn::train {

namespace fs = std::filesystem;

Status errno_status(const std::string& path, int err) {
  std::string message = path + ": " + std::strerror(err);
  return err == ENOENT ? Status::NotFound(message) : Status::IoError(message);
}

Status error_code_status(const std::string& path, const std::error_code& ec) {
  std::string message = path + ": " + ec.message();
  return ec == std::errc::no_such_file_or_directory ? Status::NotFound(message)
                                                    : Status::IoError(message);
}

StatusOr<std::unique_ptr<WritableFile>> WritableFile::create(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errno_status(path, errno);
  return std::unique_ptr<WritableFile>(new WritableFile(path, fd));
}

WritableFile::~WritableFile() {
  if (fd_ >= 0) ::close(fd_);
}

Status WritableFile::append(const void* data, size_t size) {
  if (fd_ < 0) return Status::Internal(path_ + ": append after close");
  const char* p = static_cast<const char*>(data);
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::write(fd_, p + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_status(path_, errno);
    done += static_cast<size_t>(n);
  }
  sha_.update(data, size);
  return Status::Ok();
}

Status WritableFile::sync_and_close() {
  if (fd_ < 0) return Status::Internal(path_ + ": closed twice");
  int fd = fd_;
  fd_ = -1;
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    return errno_status(path_, err);
  }
  if (::close(fd) != 0) return errno_status(path_, errno);
  return Status::Ok();
}

StatusOr<std::unique_ptr<ReadableFile>> ReadableFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno_status(path, errno);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return errno_status(path, err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::IoError(path + ": not a regular file");
  }
  return std::unique_ptr<ReadableFile>(
      new ReadableFile(path, fd, static_cast<uint64_t>(st.st_size)));
}

ReadableFile::~ReadableFile() { ::close(fd_); }

Status ReadableFile::read(void* out, size_t size) {
  char* p = static_cast<char*>(out);
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::read(fd_, p + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_status(path_, errno);
    if (n == 0)
      return Status::DataLoss(path_ + ": the file ended early (it changed while being read)");
    done += static_cast<size_t>(n);
  }
  sha_.update(out, size);
  return Status::Ok();
}

StatusOr<std::string> read_file(const std::string& path, std::string* sha256_hex) {
  auto file = ReadableFile::open(path);
  if (!file.ok()) return file.status();
  std::string data((*file)->size(), '\0');
  DTRN_RETURN_IF_ERROR((*file)->read(data.data(), data.size()));
  if (sha256_hex) *sha256_hex = (*file)->sha256_hex();
  return data;
}

Status write_file(const std::string& path, std::string_view data, std::string* sha256_hex) {
  auto file = WritableFile::create(path);
  if (!file.ok()) return file.status();
  DTRN_RETURN_IF_ERROR((*file)->append(data));
  DTRN_RETURN_IF_ERROR((*file)->sync_and_close());
  if (sha256_hex) *sha256_hex = (*file)->sha256_hex();
  return Status::Ok();
}

StatusOr<std::string> file_sha256(const std::string& path) {
  auto file = ReadableFile::open(path);
  if (!file.ok()) return file.status();
  std::vector<char> chunk(1 << 20);
  for (uint64_t left = (*file)->size(); left > 0;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(left, chunk.size()));
    DTRN_RETURN_IF_ERROR((*file)->read(chunk.data(), n));
    left -= n;
  }
  return (*file)->sha256_hex();
}

Status sync_dir(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno_status(path, errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  return rc == 0 ? Status::Ok() : errno_status(path, err);
}

Status create_dirs(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) return error_code_status(path, ec);
  if (!fs::is_directory(path, ec)) return Status::IoError(path + ": exists and is not a folder");
  return Status::Ok();
}

Status remove_tree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  return ec ? error_code_status(path, ec) : Status::Ok();
}

Status rename_path(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return Status::IoError("cannot rename " + from + " to " + to + ": " + std::strerror(errno));
  }
  return Status::Ok();
}

StatusOr<std::vector<std::string>> list_dir(const std::string& path) {
  std::error_code ec;
  std::vector<std::string> names;
  for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    names.push_back(it->path().filename().string());
  }
  if (ec) return error_code_status(path, ec);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace dtrn::train

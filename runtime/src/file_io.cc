#include "dtrn/runtime/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace dtrn {

Status errno_status(const std::string& path, int err) {
  std::string message = path + ": " + std::strerror(err);
  return err == ENOENT ? Status::NotFound(message) : Status::IoError(message);
}

StatusOr<OpenRegularFile> open_regular_file(const std::string& path) {
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
  return OpenRegularFile{fd, static_cast<uint64_t>(st.st_size)};
}

StatusOr<int> create_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errno_status(path, errno);
  return fd;
}

StatusOr<size_t> read_up_to(int fd, const std::string& path, void* out, size_t size) {
  char* p = static_cast<char*>(out);
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::read(fd, p + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_status(path, errno);
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

Status write_all(int fd, const std::string& path, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::write(fd, p + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_status(path, errno);
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status sync_and_close(int fd, const std::string& path) {
  int err = ::fsync(fd) == 0 ? 0 : errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  return err == 0 ? Status::Ok() : errno_status(path, err);
}

StatusOr<std::string> read_file(const std::string& path) {
  auto file = open_regular_file(path);
  if (!file.ok()) return file.status();
  std::string data(static_cast<size_t>(file->size), '\0');
  auto n = read_up_to(file->fd, path, data.data(), data.size());
  ::close(file->fd);
  if (!n.ok()) return n.status();
  data.resize(*n);
  return data;
}

Status write_file_atomic(const std::string& path, std::string_view data) {
  const std::string tmp = path + ".tmp";
  auto fd = create_file(tmp);
  if (!fd.ok()) return fd.status();
  Status written = write_all(*fd, tmp, data.data(), data.size());
  if (!written.ok()) {
    ::close(*fd);
    ::unlink(tmp.c_str());
    return written;
  }
  // A file that only reached the page cache is not written: sync before the rename publishes it.
  Status synced = sync_and_close(*fd, tmp);
  if (!synced.ok()) {
    ::unlink(tmp.c_str());
    return synced;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return errno_status(path, err);
  }
  return Status::Ok();
}

Status sync_dir(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno_status(path, errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  return rc == 0 ? Status::Ok() : errno_status(path, err);
}

}  // namespace dtrn

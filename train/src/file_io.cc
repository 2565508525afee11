#include "file_io.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>

namespace dtrn::train {

namespace fs = std::filesystem;

Status error_code_status(const std::string& path, const std::error_code& ec) {
  std::string message = path + ": " + ec.message();
  return ec == std::errc::no_such_file_or_directory ? Status::NotFound(message)
                                                    : Status::IoError(message);
}

StatusOr<std::unique_ptr<WritableFile>> WritableFile::create(const std::string& path) {
  auto fd = create_file(path);
  if (!fd.ok()) return fd.status();
  return std::unique_ptr<WritableFile>(new WritableFile(path, *fd));
}

WritableFile::~WritableFile() {
  if (fd_ >= 0) ::close(fd_);
}

Status WritableFile::append(const void* data, size_t size) {
  if (fd_ < 0) return Status::Internal(path_ + ": append after close");
  DTRN_RETURN_IF_ERROR(write_all(fd_, path_, data, size));
  sha_.update(data, size);
  return Status::Ok();
}

Status WritableFile::sync_and_close() {
  if (fd_ < 0) return Status::Internal(path_ + ": closed twice");
  return dtrn::sync_and_close(std::exchange(fd_, -1), path_);
}

StatusOr<std::unique_ptr<ReadableFile>> ReadableFile::open(const std::string& path) {
  auto file = open_regular_file(path);
  if (!file.ok()) return file.status();
  return std::unique_ptr<ReadableFile>(new ReadableFile(path, file->fd, file->size));
}

ReadableFile::~ReadableFile() { ::close(fd_); }

Status ReadableFile::read(void* out, size_t size) {
  auto n = read_up_to(fd_, path_, out, size);
  if (!n.ok()) return n.status();
  if (*n < size)
    return Status::DataLoss(path_ + ": the file ended early (it changed while being read)");
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

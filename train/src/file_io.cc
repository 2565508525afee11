#include "file_io.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>

#include "dtrn/runtime/check.h"

namespace dtrn::train {

namespace fs = std::filesystem;

Status error_code_status(const std::string& path, const std::error_code& ec) {
  std::string message = path + ": " + ec.message();
  return ec == std::errc::no_such_file_or_directory ? Status::NotFound(message)
                                                    : Status::IoError(message);
}

StatusOr<HashingWriter> HashingWriter::create(Env* env, const std::string& path, bool hash) {
  auto file = env->new_writable_file(path);
  if (!file.ok()) return file.status();
  return HashingWriter(std::move(*file), hash);
}

Status HashingWriter::append(const void* data, size_t size) {
  DTRN_RETURN_IF_ERROR(file_->append(data, size));
  if (hash_) sha_.update(data, size);
  bytes_ += size;
  return Status::Ok();
}

Status HashingWriter::finish() {
  DTRN_RETURN_IF_ERROR(file_->sync());
  return file_->close();
}

std::string HashingWriter::sha256_hex() {
  DTRN_CHECK(hash_, "HashingWriter: no digest of a writer made with hash = false");
  return sha_.hex_digest();
}

StatusOr<std::unique_ptr<ReadableFile>> ReadableFile::open(const std::string& path, bool hash) {
  auto file = open_regular_file(path);
  if (!file.ok()) return file.status();
  return std::unique_ptr<ReadableFile>(new ReadableFile(path, file->fd, file->size, hash));
}

std::string ReadableFile::sha256_hex() {
  DTRN_CHECK(hash_, path_, ": no digest of a file opened with hash = false");
  return sha_.hex_digest();
}

ReadableFile::~ReadableFile() { ::close(fd_); }

Status ReadableFile::read(void* out, size_t size) {
  auto n = read_up_to(fd_, path_, out, size);
  if (!n.ok()) return n.status();
  if (*n < size)
    return Status::DataLoss(path_ + ": the file ended early (it changed while being read)");
  if (hash_) sha_.update(out, size);
  return Status::Ok();
}

Status ReadableFile::skip(uint64_t size) {
  if (::lseek(fd_, static_cast<off_t>(size), SEEK_CUR) < 0) {
    return Status::IoError(path_ + ": seek: " + std::strerror(errno));
  }
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

Status write_file(Env* env, const std::string& path, std::string_view data, std::string* sha256_hex) {
  auto file = HashingWriter::create(env, path);
  if (!file.ok()) return file.status();
  DTRN_RETURN_IF_ERROR(file->append(data));
  DTRN_RETURN_IF_ERROR(file->finish());
  if (sha256_hex) *sha256_hex = file->sha256_hex();
  return Status::Ok();
}

std::string parent_dir(const std::string& path) {
  const std::string parent = fs::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

Status write_file_atomic(Env* env, const std::string& path, std::string_view data) {
  const std::string tmp = path + ".tmp";
  Status s = write_file(env, tmp, data);
  if (s.ok()) s = env->rename(tmp, path);
  if (!s.ok()) {
    env->remove_file(tmp);
    return s;
  }
  return env->sync_dir(parent_dir(path));
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

}  // namespace dtrn::train

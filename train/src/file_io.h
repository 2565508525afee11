// File I/O for dtrn_train's checkpoints and exports: writes through an Env (env.h) and reads on top of
// dtrn/runtime/file_io.h, hashing the bytes passing through them (sha256, for the checkpoint
// manifest). Every error is a Status naming the path and the
// problem ("run/checkpoints/step-00000100/shard-00000-of-00001.<id>.safetensors.tmp: No space left on device").
// Private to dtrn_train. Each object belongs to one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "dtrn/runtime/file_io.h"
#include "dtrn/runtime/sha256.h"
#include "dtrn/runtime/status.h"
#include "env.h"

namespace dtrn::train {

// "<path>: <ec.message()>": NotFound for no_such_file_or_directory, IoError otherwise.
Status error_code_status(const std::string& path, const std::error_code& ec);

// Appends to a file of an Env and hashes the bytes (sha256) on their way, unless made with hash =
// false (a checkpoint shard hashes each tensor instead). finish() syncs and closes.
class HashingWriter {
 public:
  static StatusOr<HashingWriter> create(Env* env, const std::string& path, bool hash = true);
  Status append(const void* data, size_t size);
  Status append(std::string_view s) { return append(s.data(), s.size()); }
  Status finish();  // fsync, then close
  std::string sha256_hex();  // of everything appended; call once, on a hashing writer
  uint64_t bytes() const { return bytes_; }

 private:
  HashingWriter(std::unique_ptr<WritableFile> file, bool hash)
      : file_(std::move(file)), hash_(hash) {}
  std::unique_ptr<WritableFile> file_;
  bool hash_;
  Sha256 sha_;
  uint64_t bytes_ = 0;
};

// A regular file opened for sequential reading; the bytes read are hashed unless hash = false.
class ReadableFile {
 public:
  static StatusOr<std::unique_ptr<ReadableFile>> open(const std::string& path, bool hash = true);
  ~ReadableFile();
  ReadableFile(const ReadableFile&) = delete;
  ReadableFile& operator=(const ReadableFile&) = delete;

  uint64_t size() const { return size_; }
  // Exactly `size` bytes, or DataLoss when the file ends first.
  Status read(void* out, size_t size);
  // Moves past `size` bytes without reading them (the digest then covers only what was read).
  Status skip(uint64_t size);
  std::string sha256_hex();  // of everything read; call once, on a hashing file
  const std::string& path() const { return path_; }

 private:
  ReadableFile(std::string path, int fd, uint64_t size, bool hash)
      : path_(std::move(path)), fd_(fd), size_(size), hash_(hash) {}
  std::string path_;
  int fd_;
  uint64_t size_;
  bool hash_;
  Sha256 sha_;
};

// Whole files. `sha256_hex`, when given, receives the digest of the bytes read or written.
StatusOr<std::string> read_file(const std::string& path, std::string* sha256_hex = nullptr);
// Writes, fsyncs and closes `path` (not atomic: for files inside a folder that is committed later).
Status write_file(Env* env, const std::string& path, std::string_view data,
                  std::string* sha256_hex = nullptr);
// Writes `path`.tmp, fsyncs it, renames it over `path` and fsyncs the folder: after a crash `path` is
// the old or the new content, never a mixture, and the new name itself is durable.
Status write_file_atomic(Env* env, const std::string& path, std::string_view data);
// Streams the file through sha256 without holding it in memory.
StatusOr<std::string> file_sha256(const std::string& path);
// The folder part of a path ("." for a bare name).
std::string parent_dir(const std::string& path);

}  // namespace dtrn::train

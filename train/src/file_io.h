// File I/O for dtrn_train's checkpoints and exports, on top of dtrn/runtime/file_io.h: whole-file
// and streaming reads and writes that hash the bytes passing through them (sha256, for the
// checkpoint manifest), and folder operations. Every error is a Status naming the path and the
// problem ("run/checkpoints/step-00000100.tmp-42/model.safetensors: No space left on device").
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

namespace dtrn::train {

// "<path>: <ec.message()>": NotFound for no_such_file_or_directory, IoError otherwise.
Status error_code_status(const std::string& path, const std::error_code& ec);

// Creates or truncates `path`. Appends go straight to the file; sync_and_close() makes them
// durable. Destroying an unclosed file closes it without syncing (the partial file stays for the
// caller to remove).
class WritableFile {
 public:
  static StatusOr<std::unique_ptr<WritableFile>> create(const std::string& path);
  ~WritableFile();
  WritableFile(const WritableFile&) = delete;
  WritableFile& operator=(const WritableFile&) = delete;

  Status append(const void* data, size_t size);
  Status append(std::string_view s) { return append(s.data(), s.size()); }
  Status sync_and_close();
  std::string sha256_hex() { return sha_.hex_digest(); }  // of everything appended; call once
  const std::string& path() const { return path_; }

 private:
  WritableFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_;
  Sha256 sha_;
};

// A regular file opened for sequential reading.
class ReadableFile {
 public:
  static StatusOr<std::unique_ptr<ReadableFile>> open(const std::string& path);
  ~ReadableFile();
  ReadableFile(const ReadableFile&) = delete;
  ReadableFile& operator=(const ReadableFile&) = delete;

  uint64_t size() const { return size_; }
  // Exactly `size` bytes, or DataLoss when the file ends first.
  Status read(void* out, size_t size);
  std::string sha256_hex() { return sha_.hex_digest(); }  // of everything read; call once
  const std::string& path() const { return path_; }

 private:
  ReadableFile(std::string path, int fd, uint64_t size)
      : path_(std::move(path)), fd_(fd), size_(size) {}
  std::string path_;
  int fd_;
  uint64_t size_;
  Sha256 sha_;
};

// Whole files. `sha256_hex`, when given, receives the digest of the bytes read or written.
StatusOr<std::string> read_file(const std::string& path, std::string* sha256_hex = nullptr);
Status write_file(const std::string& path, std::string_view data,
                  std::string* sha256_hex = nullptr);
// Streams the file through sha256 without holding it in memory.
StatusOr<std::string> file_sha256(const std::string& path);

Status create_dirs(const std::string& path);
Status remove_tree(const std::string& path);
Status rename_path(const std::string& from, const std::string& to);
// Names (not paths) of the entries of a folder, sorted.
StatusOr<std::vector<std::string>> list_dir(const std::string& path);

}  // namespace dtrn::train

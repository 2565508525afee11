// POSIX file I/O shared by the modules that touch disk (dtrn_data's shards and metadata,
// dtrn_train's checkpoints): whole-file reads, crash-safe whole-file writes, folder syncs, and the
// file-descriptor steps the modules' own file types are built from. Every error is a Status whose
// message names the path and the problem ("data/train_0003.bin: No space left on device"): NotFound
// for ENOENT, IoError otherwise. No shared state: thread-safe; a descriptor belongs to the caller
// that opened it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "dtrn/runtime/status.h"

namespace dtrn {

// "<path>: <strerror(err)>": NotFound for ENOENT, IoError otherwise.
Status errno_status(const std::string& path, int err);

// A regular file opened read-only; the caller closes `fd`.
struct OpenRegularFile {
  int fd;
  uint64_t size;  // at open time
};
// IoError "<path>: not a regular file" for a folder, a device or a pipe.
StatusOr<OpenRegularFile> open_regular_file(const std::string& path);

// Creates or truncates `path` (mode 0644) for writing and returns its descriptor.
StatusOr<int> create_file(const std::string& path);

// Reads until `size` bytes are in `out` or the file ends, retrying interrupted reads; returns the
// number of bytes read (less than `size` only at the end of the file).
StatusOr<size_t> read_up_to(int fd, const std::string& path, void* out, size_t size);
// Writes all `size` bytes, retrying short and interrupted writes.
Status write_all(int fd, const std::string& path, const void* data, size_t size);
// fsync, then close: the bytes written are durable once this returns ok. `fd` is closed either way.
Status sync_and_close(int fd, const std::string& path);

// The bytes of a regular file; fewer than its size at open when it shrinks while being read.
StatusOr<std::string> read_file(const std::string& path);

// Writes `path + ".tmp"`, fsyncs it and renames it over `path`: a reader never sees a half-written
// file under `path`, even after a crash. On failure the temporary file is removed. The folder is
// not synced: sync_dir() makes the rename itself survive a crash.
Status write_file_atomic(const std::string& path, std::string_view data);

// fsync of a folder, so that the names created or renamed in it survive a crash.
Status sync_dir(const std::string& path);

}  // namespace dtrn

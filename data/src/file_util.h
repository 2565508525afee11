// Whole-file reads and crash-safe whole-file writes for dtrn_data, returning Status values whose
// message names the file ("corpus/a.txt: No such file or directory"). Private to dtrn_data.
// Thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "dtrn/runtime/status.h"

namespace dtrn::data {

// The bytes of a regular file. A missing file is NotFound; a directory or unreadable file is
// IoError.
StatusOr<std::string> read_file(const std::string& path);

// Writes `path` through `path + ".tmp"`, then renames: a reader never sees a half-written file
// under `path`, even after a crash.
Status write_file_atomic(const std::string& path, std::string_view data);

// "<path>: <strerror(errno)>" as an IoError (NotFound for ENOENT).
Status errno_status(const std::string& path, int err);

}  // namespace dtrn::data

// The sequential write bandwidth of a file system as a checkpoint shard meets it: large appends through
// an Env, one fsync at the end. `dtrn bench` puts it beside the measured write throughput of its saves
// (bench.h), so a save's write can be judged against what the disk can do.
#pragma once

#include <cstdint>
#include <string>

#include "dtrn/runtime/status.h"
#include "env.h"

namespace dtrn::train {

// Writes `bytes` of pseudo-random data (a compressing file system would flatter zeros) to a new file at
// `path` in 64 MiB appends, fsyncs and closes it, then removes it. Returns MB/s (MB = 1e6 bytes), timed
// from the open to the close.
StatusOr<double> sequential_write_mb_s(Env* env, const std::string& path, uint64_t bytes);

}  // namespace dtrn::train

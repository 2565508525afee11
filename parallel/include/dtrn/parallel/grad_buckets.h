// GradientBuckets: data parallelism's gradient averaging, overlapped with backward (as PyTorch DDP and
// Megatron's DistributedDataParallel do it).
//
// Parameters are packed, in reverse order (backward produces the last layers' gradients first), into
// buckets of about bucket_bytes; each parameter's .grad becomes a view of its bucket's one flat buffer
// (starting on a 256-byte boundary, padding between), so backward accumulates straight into it and no copy
// is needed. On the step's last micro-batch (arm()), a
// post-accumulate hook (autograd.h) counts each bucket's finished gradients and starts its collective the
// moment the bucket is complete, while backward goes on with earlier layers. Buckets start strictly in
// bucket order, so every rank issues the same collectives in the same order even where backward visits
// parameters in another order; a parameter no backward reached is zero and its bucket starts in finish().
//
// Plain DP all-reduces each bucket with avg over the DP group. Each rank's loss is the mean over its own
// micro-batches, so the average over ranks is the mean over the global batch: the gradient one process
// would compute for the same global batch, and the routing loss's strength does not change with dp.
// ZeRO-1 (shard = true) reduce-scatters instead: rank r receives the averaged piece r of every bucket
// (shard(b)), which zero_optimizer.h updates; the other pieces of the bucket buffers are then stale.
//
// Ownership: holds the gradient buffers; the parameters' .grad views keep them alive too. Not thread-safe;
// the hooks run on the backward's thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dtrn/parallel/communicator.h"

namespace dtrn::parallel {

struct BucketOptions {
  int64_t bucket_bytes = int64_t{25} << 20;  // ~25 MB, PyTorch DDP's and Megatron's default
  bool shard = false;                         // ZeRO-1: reduce-scatter instead of all-reduce
};

class GradientBuckets {
 public:
  struct Slot {
    std::string name;
    Tensor leaf;  // what backward accumulates into (the compute copy under bf16)
    int64_t bucket = 0;
    int64_t offset = 0;  // in elements, within the bucket's buffer
  };
  struct Bucket {
    Tensor buffer;  // flat, numel padded to a multiple of the group size
    Tensor shard;   // ZeRO-1: this rank's averaged piece (buffer.numel() / size elements)
    std::vector<int64_t> slots;
    int64_t remaining = 0;
    std::unique_ptr<Work> work;
  };

  // leaves: (name, tensor) in parameter order; all on one device, gradients of one dtype (f32 for f32 and
  // bf16 leaves, f64 for f64). Existing gradients are discarded.
  GradientBuckets(const std::vector<std::pair<std::string, Tensor>>& leaves, Communicator& group,
                  BucketOptions options);
  ~GradientBuckets();  // removes the hooks
  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;

  // The next backward is the step's last: start each bucket's collective as soon as it is complete.
  void arm();
  // Starts what the backward did not, waits for every bucket, disarms. After it the gradients are averaged
  // (plain DP) or shard(b) holds this rank's averaged piece (ZeRO-1).
  void finish();

  const std::vector<Slot>& slots() const { return slots_; }
  const std::vector<Bucket>& buckets() const { return buckets_; }
  Communicator& group() { return group_; }

 private:
  void ready(int64_t slot);
  void start_ready_buckets();

  Communicator& group_;
  BucketOptions options_;
  std::vector<Slot> slots_;
  std::vector<Bucket> buckets_;
  bool armed_ = false;
  size_t next_to_start_ = 0;  // buckets below it have started
};

}  // namespace dtrn::parallel

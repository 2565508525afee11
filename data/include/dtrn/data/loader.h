// The training data loader: fixed windows of seq_len + 1 tokens from a memory-mapped TokenDataset,
// in the Sampler's order, split across data-parallel ranks, prefetched on a background thread.
//
// Windows: shard s of n tokens holds (n - 1) / seq_len windows, window j covering tokens
// [j * seq_len, j * seq_len + seq_len]; inputs are its first seq_len tokens, targets its last
// seq_len (adjacent windows share one token, none crosses a shard). Windows are numbered over
// shards in order.
//
// Batches: a step consumes global_batch consecutive samples of the Sampler's stream. DP rank r of D
// takes the r-th contiguous slice of global_batch / D samples, in micro batches of micro_batch. So
// the global batch of step k (the ranks' slices in rank order) is the same whatever D is, and
// state(), taken between steps, resumes the exact stream with any D.
//
// Thread-safety: one consumer thread calls next()/state(); the loader's own thread fills a bounded
// queue. Destruction stops and joins that thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "dtrn/data/dataset.h"
#include "dtrn/data/sampler.h"
#include "dtrn/runtime/status.h"

namespace dtrn::data {

struct LoaderOptions {
  int64_t seq_len = 0;       // T
  int64_t micro_batch = 0;   // B: sequences per next()
  int64_t global_batch = 0;  // sequences per optimizer step, all ranks together
  int dp_rank = 0;
  int dp_size = 1;
  uint64_t seed = 0;
  bool shuffle = true;  // false: windows in order (evaluation)
  int prefetch = 4;     // micro batches prepared ahead
};

// One micro batch: B x T inputs and targets, row-major.
struct Batch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> inputs, targets;
  std::vector<uint64_t> windows;  // the window of each row (for tests and debugging)
};

class DataLoader {
 public:
  // Fails (InvalidArgument, naming the value) when global_batch is not a multiple of micro_batch *
  // dp_size, dp_rank is out of range, `start` lies outside the epoch, or seq_len is longer than
  // every shard.
  static StatusOr<std::unique_ptr<DataLoader>> Open(std::shared_ptr<const TokenDataset> dataset,
                                                    const LoaderOptions& options,
                                                    SamplerState start = {});
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // The next micro batch of this rank; blocks only when the prefetch thread is behind.
  Batch next();
  // The position of the next step, for checkpoints. Only between steps: after a multiple of
  // micro_batches_per_step() calls to next().
  SamplerState state() const;

  int64_t micro_batches_per_step() const { return accum_; }
  uint64_t samples_per_epoch() const { return sampler_.num_samples(); }

 private:
  DataLoader(std::shared_ptr<const TokenDataset> dataset, const LoaderOptions& options,
             std::vector<uint64_t> window_starts, SamplerState start);
  void produce();
  Batch make_batch(uint64_t micro_index);

  std::shared_ptr<const TokenDataset> dataset_;
  LoaderOptions options_;
  std::vector<uint64_t> window_starts_;  // first window of each shard, then the total
  Sampler sampler_;                      // used by the producer thread only
  SamplerState start_;
  int64_t accum_;
  uint64_t consumed_ = 0;  // micro batches handed out by next()

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch> queue_;
  bool stop_ = false;
  std::thread producer_;
};

}  // namespace dtrn::data

#include "dtrn/data/loader.h"

#include <algorithm>

namespace dtrn::data {

StatusOr<std::unique_ptr<DataLoader>> DataLoader::Open(std::shared_ptr<const TokenDataset> dataset,
                                                       const LoaderOptions& o, SamplerState start) {
  auto bad = [](const std::string& m) { return Status::InvalidArgument(m); };
  if (o.seq_len <= 0) return bad("seq_len must be positive, got " + std::to_string(o.seq_len));
  if (o.micro_batch <= 0)
    return bad("micro_batch must be positive, got " + std::to_string(o.micro_batch));
  if (o.dp_size <= 0 || o.dp_rank < 0 || o.dp_rank >= o.dp_size) {
    return bad("dp_rank " + std::to_string(o.dp_rank) + " is not in [0, dp " +
               std::to_string(o.dp_size) + ")");
  }
  if (o.global_batch <= 0 || o.global_batch % (o.micro_batch * o.dp_size) != 0) {
    return bad("global_batch " + std::to_string(o.global_batch) +
               " is not a multiple of micro_batch " + std::to_string(o.micro_batch) + " x dp " +
               std::to_string(o.dp_size));
  }
  std::vector<uint64_t> window_starts{0};
  uint64_t largest = 0;
  for (const ShardFile& shard : dataset->shards()) {
    const uint64_t n = shard.num_tokens();
    largest = std::max(largest, n);
    window_starts.push_back(window_starts.back() + (n > 0 ? (n - 1) / uint64_t(o.seq_len) : 0));
  }
  if (window_starts.back() == 0) {
    return bad("seq_len " + std::to_string(o.seq_len) + " is longer than every shard of " +
               dataset->dir() + " (" + dataset->split() + "; the largest holds " +
               std::to_string(largest) + " tokens, a window needs seq_len + 1)");
  }
  if (start.next_sample >= window_starts.back()) {
    return bad("sampler state at sample " + std::to_string(start.next_sample) + " of an epoch of " +
               std::to_string(window_starts.back()) + " windows (another dataset or seq_len?)");
  }
  return std::unique_ptr<DataLoader>(
      new DataLoader(std::move(dataset), o, std::move(window_starts), start));
}

DataLoader::DataLoader(std::shared_ptr<const TokenDataset> dataset, const LoaderOptions& options,
                       std::vector<uint64_t> window_starts, SamplerState start)
    : dataset_(std::move(dataset)),
      options_(options),
      window_starts_(std::move(window_starts)),
      sampler_(window_starts_.back(), options.seed, options.shuffle),
      start_(start),
      accum_(options.global_batch / (options.micro_batch * options.dp_size)) {
  producer_ = std::thread([this] { produce(); });
}

DataLoader::~DataLoader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  producer_.join();
}

Batch DataLoader::make_batch(uint64_t micro_index) {
  const int64_t B = options_.micro_batch, T = options_.seq_len;
  const uint64_t per_rank = uint64_t(options_.global_batch / options_.dp_size);
  const uint64_t step = micro_index / uint64_t(accum_), micro = micro_index % uint64_t(accum_);
  const uint64_t offset = step * uint64_t(options_.global_batch) +
                          uint64_t(options_.dp_rank) * per_rank + micro * uint64_t(B);
  Batch batch;
  batch.B = B;
  batch.T = T;
  batch.inputs.resize(size_t(B * T));
  batch.targets.resize(size_t(B * T));
  batch.windows.resize(size_t(B));
  for (int64_t b = 0; b < B; ++b) {
    const SamplerState at = sampler_.advance(start_, offset + uint64_t(b));
    const uint64_t w = sampler_.window(at.epoch, at.next_sample);
    const size_t s = size_t(std::upper_bound(window_starts_.begin(), window_starts_.end(), w) -
                            window_starts_.begin()) -
                     1;
    const uint16_t* tokens = dataset_->shards()[s].tokens() + (w - window_starts_[s]) * uint64_t(T);
    int32_t* in = batch.inputs.data() + b * T;
    int32_t* out = batch.targets.data() + b * T;
    for (int64_t t = 0; t < T; ++t) {
      in[t] = tokens[t];
      out[t] = tokens[t + 1];
    }
    batch.windows[size_t(b)] = w;
  }
  return batch;
}

void DataLoader::produce() {
  for (uint64_t micro_index = 0;; ++micro_index) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock,
               [&] { return stop_ || queue_.size() < size_t(std::max(1, options_.prefetch)); });
      if (stop_) return;
    }
    Batch batch = make_batch(micro_index);
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(batch));
    }
    cv_.notify_all();
  }
}

Batch DataLoader::next() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !queue_.empty(); });
  Batch batch = std::move(queue_.front());
  queue_.pop_front();
  ++consumed_;
  lock.unlock();
  cv_.notify_all();
  return batch;
}

SamplerState DataLoader::state() const {
  DTRN_CHECK(consumed_ % uint64_t(accum_) == 0, "DataLoader::state() in the middle of a step (",
             consumed_ % uint64_t(accum_), " of ", accum_, " micro batches taken)");
  const uint64_t steps = consumed_ / uint64_t(accum_);
  const uint64_t n = sampler_.num_samples();
  const uint64_t index = start_.next_sample + steps * uint64_t(options_.global_batch);
  return {start_.epoch + index / n, index % n};
}

}  // namespace dtrn::data

// The order in which training visits the windows of a dataset, as a pure function of (seed, epoch).
//
// Sample positions form one global stream: position p is index p % N of epoch p / N, where N is the
// number of windows. Each epoch visits every window once, in a permutation drawn by Fisher-Yates
// from the counter-based RNG (rng.h) on stream kDataOrderStream + epoch, so the order never depends
// on how many processes read it or on what was read before. SamplerState is the whole position: two
// integers that a checkpoint stores and a resumed run (with any data-parallel degree) continues
// from.
//
// Thread-safety: a Sampler caches the permutation of the epoch it last served; use one per thread.
#pragma once

#include <cstdint>
#include <vector>

namespace dtrn::data {

// rng.h stream ids: "data" in the high bits, the epoch in the low ones.
inline constexpr uint64_t kDataOrderStream = uint64_t(0x64617461) << 32;

struct SamplerState {
  uint64_t epoch = 0;
  uint64_t next_sample = 0;  // index within the epoch, < num_samples
  bool operator==(const SamplerState&) const = default;
};

class Sampler {
 public:
  // shuffle = false visits windows in order (evaluation).
  Sampler(uint64_t num_samples, uint64_t seed, bool shuffle = true);

  uint64_t num_samples() const { return num_samples_; }
  // The window visited at `index` (< num_samples) of `epoch`.
  uint64_t window(uint64_t epoch, uint64_t index);
  // The state `n` samples after `s`, across epoch boundaries.
  SamplerState advance(SamplerState s, uint64_t n) const;

 private:
  uint64_t num_samples_, seed_;
  bool shuffle_;
  uint64_t cached_epoch_ = UINT64_MAX;
  std::vector<uint32_t> order_;
};

}  // namespace dtrn::data

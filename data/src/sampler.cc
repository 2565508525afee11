#include "dtrn/data/sampler.h"

#include <utility>

#include "dtrn/runtime/check.h"
#include "dtrn/runtime/rng.h"

namespace dtrn::data {

Sampler::Sampler(uint64_t num_samples, uint64_t seed, bool shuffle)
    : num_samples_(num_samples), seed_(seed), shuffle_(shuffle) {
  DTRN_CHECK(num_samples > 0, "a sampler needs at least one sample");
  DTRN_CHECK(num_samples <= UINT32_MAX, "more than 2^32 windows: ", num_samples);
}

uint64_t Sampler::window(uint64_t epoch, uint64_t index) {
  DTRN_CHECK_LT(index, num_samples_);
  if (!shuffle_) return index;
  if (epoch != cached_epoch_) {
    order_.resize(num_samples_);
    for (uint64_t i = 0; i < num_samples_; ++i) order_[i] = static_cast<uint32_t>(i);
    RngStream rng(seed_, kDataOrderStream + epoch);
    for (uint64_t i = num_samples_ - 1; i > 0; --i)
      std::swap(order_[i], order_[rng.next_below(i + 1)]);
    cached_epoch_ = epoch;
  }
  return order_[index];
}

SamplerState Sampler::advance(SamplerState s, uint64_t n) const {
  const uint64_t index = s.next_sample + n;
  return {s.epoch + index / num_samples_, index % num_samples_};
}

}  // namespace dtrn::data

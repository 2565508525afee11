#include "dtrn/runtime/rng.h"

#include <cmath>

#include "rng_philox.h"  // the Philox rounds and word-to-float maps, shared with cuda/random.cu

namespace dtrn {

std::array<uint32_t, 4> philox_block(uint64_t seed, uint64_t stream, uint64_t counter) {
  const PhiloxWords block = philox4x32_10(seed, stream, counter);
  return {block.w[0], block.w[1], block.w[2], block.w[3]};
}

uint32_t philox_u32(uint64_t seed, uint64_t stream, uint64_t offset) {
  return philox_word(seed, stream, offset);
}

float philox_uniform(uint64_t seed, uint64_t stream, uint64_t offset) {
  return philox_word_to_uniform(philox_word(seed, stream, offset));
}

double philox_normal(uint64_t seed, uint64_t stream, uint64_t offset) {
  // Box-Muller on two words; u1 in (0, 1] so the log is finite.
  const double u1 = philox_word_to_open_unit(philox_word(seed, stream, 2 * offset));
  const double u2 = philox_word_to_unit(philox_word(seed, stream, 2 * offset + 1));
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

uint64_t RngStream::next_below(uint64_t n) {
  const uint64_t draw = philox_below(seed_, stream_, offset_, n);
  offset_ += 2;
  return draw;
}

}  // namespace dtrn

// Counter-based random numbers (Philox-4x32-10). Every draw is a pure function of
// (seed, stream, offset): no hidden state, so runs are reproducible across processes and devices, and a
// resumed run continues exactly by restoring the offsets it had reached. Streams separate independent uses
// (parameter init, data order, starvation fallback, ...).
#pragma once

#include <array>
#include <cstdint>

namespace dtrn {

// One Philox-4x32-10 block: four 32-bit words for (seed, stream, counter).
std::array<uint32_t, 4> philox_block(uint64_t seed, uint64_t stream, uint64_t counter);

// The 32-bit word number `offset` of (seed, stream): word i comes from block i / 4, lane i % 4.
uint32_t philox_u32(uint64_t seed, uint64_t stream, uint64_t offset);
// Uniform in [0, 1) with 24 random bits, from word `offset`.
float philox_uniform(uint64_t seed, uint64_t stream, uint64_t offset);
// Standard normal from words 2*offset and 2*offset+1 (Box-Muller), so element i of a normal tensor
// consumes exactly two words.
double philox_normal(uint64_t seed, uint64_t stream, uint64_t offset);

// A cursor over one stream, for host-side draws (sampling, fallback masks). Its whole state is the offset.
class RngStream {
 public:
  RngStream(uint64_t seed, uint64_t stream, uint64_t offset = 0)
      : seed_(seed), stream_(stream), offset_(offset) {}
  uint32_t next_u32() { return philox_u32(seed_, stream_, offset_++); }
  float next_uniform() { return philox_uniform(seed_, stream_, offset_++); }
  // Uniform integer in [0, n), n > 0 (64-bit multiply-shift: bias below 2^-32 for n < 2^32).
  uint64_t next_below(uint64_t n);
  uint64_t offset() const { return offset_; }
  void set_offset(uint64_t offset) { offset_ = offset; }
  uint64_t seed() const { return seed_; }
  uint64_t stream() const { return stream_; }

 private:
  uint64_t seed_, stream_, offset_;
};

}  // namespace dtrn

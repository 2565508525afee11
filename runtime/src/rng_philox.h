// Philox-4x32-10 (Salmon et al., SC'11) and the uniform and normal draws of rng.h, written once for the
// host and the device: rng.cc and cuda/random.cu both call these, so that a tensor drawn on the GPU has
// the bits of the same tensor drawn on the CPU (cuda_test.cc checks it).
//
// Layout, as rng.h defines it: counter = (counter lo, counter hi, stream lo, stream hi), key = seed; the
// 32-bit word number `offset` of (seed, stream) is lane offset % 4 of block offset / 4.
//
// C++17 and free of CUDA headers; under nvcc every function is __host__ __device__.
#pragma once

#include <cstdint>

#include "host_device.h"

namespace dtrn {

struct PhiloxWords {
  uint32_t w[4];
};

DTRN_HOST_DEVICE inline PhiloxWords philox4x32_10(uint64_t seed, uint64_t stream, uint64_t counter) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = static_cast<uint32_t>(stream), c3 = static_cast<uint32_t>(stream >> 32);
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kMul0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kMul1) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return PhiloxWords{{c0, c1, c2, c3}};
}

DTRN_HOST_DEVICE inline uint32_t philox_word(uint64_t seed, uint64_t stream, uint64_t offset) {
  return philox4x32_10(seed, stream, offset / 4).w[offset % 4];
}

// A uniform integer in [0, n) from words offset (high half) and offset + 1 (low half) by a 64-bit
// multiply-shift: RngStream::next_below, and the device-side starvation fallback, which must draw the
// same tokens.
DTRN_HOST_DEVICE inline uint64_t philox_below(uint64_t seed, uint64_t stream, uint64_t offset, uint64_t n) {
  const uint64_t x = (static_cast<uint64_t>(philox_word(seed, stream, offset)) << 32) |
                     philox_word(seed, stream, offset + 1);
#if defined(__CUDA_ARCH__)
  return __umul64hi(x, n);
#else
  return static_cast<uint64_t>((static_cast<unsigned __int128>(x) * n) >> 64);
#endif
}

// Uniform in [0, 1) from the top 24 bits of a word: exact in float, so no rounding can differ.
DTRN_HOST_DEVICE inline float philox_word_to_uniform(uint32_t word) {
  return static_cast<float>(word >> 8) * (1.0f / 16777216.0f);
}

// The two words of Box-Muller as the (0, 1] and [0, 1) doubles rng.cc feeds to log and cos.
DTRN_HOST_DEVICE inline double philox_word_to_open_unit(uint32_t word) {
  return (static_cast<double>(word) + 1.0) / 4294967296.0;
}
DTRN_HOST_DEVICE inline double philox_word_to_unit(uint32_t word) {
  return static_cast<double>(word) / 4294967296.0;
}

}  // namespace dtrn

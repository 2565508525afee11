#include "dtrn/runtime/rng.h"

#include <cmath>

namespace dtrn {

std::array<uint32_t, 4> philox_block(uint64_t seed, uint64_t stream, uint64_t counter) {
  // Philox-4x32-10 (Salmon et al., SC'11): counter = (counter lo, counter hi, stream lo, stream hi),
  // key = seed.
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
  return {c0, c1, c2, c3};
}

uint32_t philox_u32(uint64_t seed, uint64_t stream, uint64_t offset) {
  return philox_block(seed, stream, offset / 4)[offset % 4];
}

float philox_uniform(uint64_t seed, uint64_t stream, uint64_t offset) {
  return static_cast<float>(philox_u32(seed, stream, offset) >> 8) * (1.0f / 16777216.0f);
}

double philox_normal(uint64_t seed, uint64_t stream, uint64_t offset) {
  // Box-Muller on two words; u1 in (0, 1] so the log is finite.
  const double u1 = (static_cast<double>(philox_u32(seed, stream, 2 * offset)) + 1.0) / 4294967296.0;
  const double u2 = static_cast<double>(philox_u32(seed, stream, 2 * offset + 1)) / 4294967296.0;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

uint64_t RngStream::next_below(uint64_t n) {
  const uint64_t hi = next_u32(), lo = next_u32();
  const unsigned __int128 x = static_cast<unsigned __int128>((hi << 32) | lo) * n;
  return static_cast<uint64_t>(x >> 64);
}

}  // namespace dtrn

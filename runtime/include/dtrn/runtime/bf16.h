// bfloat16: the upper 16 bits of an IEEE float32. Conversion from float rounds to nearest, ties to even;
// NaN stays NaN (quiet, sign kept) and never rounds up into Inf; +-Inf and +-0 are exact. Used for storage
// on the CPU and as the compute type of the CUDA backend's matrix products.
#pragma once

#include <bit>
#include <cstdint>

namespace dtrn {

struct BFloat16 {
  uint16_t bits = 0;

  BFloat16() = default;
  explicit BFloat16(float value) : bits(FromFloatBits(value)) {}
  explicit operator float() const { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

  static constexpr BFloat16 FromBits(uint16_t b) {
    BFloat16 x;
    x.bits = b;
    return x;
  }

  static uint16_t FromFloatBits(float value) {
    uint32_t u = std::bit_cast<uint32_t>(value);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0) {
      return static_cast<uint16_t>((u >> 16) | 0x0040u);  // NaN: keep sign and top payload, force quiet
    }
    // Round to nearest even: add 0x7fff plus the lowest kept bit, then truncate.
    uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
    return static_cast<uint16_t>((u + rounding) >> 16);
  }
};

static_assert(sizeof(BFloat16) == 2);

}  // namespace dtrn

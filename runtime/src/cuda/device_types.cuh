// Device-side element types and conversions shared by the elementwise .cu files. bfloat16 is held as its
// bit pattern; rounding from float is bf16.h's (round to nearest even), so a value rounded here has the
// same bits as one rounded on the CPU, except that arithmetic kernels write NaN results as the
// canonical NaN (Note [bf16 rounding in one instruction]).
#pragma once

#include <cstdint>

#include "cuda/elementwise.h"

namespace dtrn::cuda {

struct Bf16 {
  uint16_t bits;
};

__device__ __forceinline__ float bf16_to_float(Bf16 x) {
  return __uint_as_float(static_cast<uint32_t>(x.bits) << 16);
}

// Note [bf16 rounding in one instruction]: the element-wise kernels that write bf16 are bound by
// instructions, not bytes (Nsight Compute on RMSNorm's forward: the integer pipe 64% busy, the DRAM
// 26%; on the fused cross-entropy 66% and 39%), and rounding by bit arithmetic took about eight
// integer instructions an element. From sm_80 the hardware rounds to nearest even in one
// (cvt.rn.bf16.f32), with the same result for every finite value, infinity and subnormal. Only NaN
// differs: the hardware writes the canonical NaN, where bf16.h keeps the sign and the top of the
// payload. Keeping bf16.h's NaN costs a compare and a select an element, which on a throughput test
// (bench/variants/bf16_rounding.cu, H200) cut the conversions' rate from 38 to 14 a clock per SM (bit
// arithmetic: 7). So there are two roundings:
// - store_bf16, bf16.h to the bit, NaN included: copies and dtype conversions (fill_copy.cu, to()),
//   whose contract is the CPU's storage format, and the optimizer's bf16 weight copy;
// - round_bf16, the hardware's: arithmetic results (Converter<Bf16, ...>, from_compute, from_double).
//   A NaN result stays NaN (canonical: sign and payload are not kept); every other value has the
//   CPU's bits.
__device__ __forceinline__ Bf16 store_bf16(float value) {
  const uint32_t u = __float_as_uint(value);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint16_t bits;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(bits) : "f"(value));
  return Bf16{value != value ? static_cast<uint16_t>((u >> 16) | 0x0040u) : bits};
#else
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0) {
    return Bf16{static_cast<uint16_t>((u >> 16) | 0x0040u)};
  }
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return Bf16{static_cast<uint16_t>((u + rounding) >> 16)};
#endif
}

__device__ __forceinline__ Bf16 round_bf16(float value) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint16_t bits;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(bits) : "f"(value));
  return Bf16{bits};
#else
  return store_bf16(value);
#endif
}

// Converts between element types exactly as the CPU backend's copy does (cpu_backend.cc: load as
// double, store with a C++ cast; bf16 is stored from the value rounded to float first). The f32 <-> bf16
// and same-type cases skip the double, which changes no result since float -> double -> float is exact.
__device__ __forceinline__ double to_double(double x) { return x; }
__device__ __forceinline__ double to_double(float x) { return x; }
__device__ __forceinline__ double to_double(Bf16 x) { return bf16_to_float(x); }
__device__ __forceinline__ double to_double(int32_t x) { return x; }
__device__ __forceinline__ double to_double(int64_t x) { return static_cast<double>(x); }

template <typename To>
struct FromDouble {
  __device__ __forceinline__ static To run(double v) { return static_cast<To>(v); }
};
template <>
struct FromDouble<Bf16> {
  __device__ __forceinline__ static Bf16 run(double v) { return round_bf16(static_cast<float>(v)); }
};

template <typename To, typename From>
struct Converter {
  __device__ __forceinline__ static To run(From x) { return FromDouble<To>::run(to_double(x)); }
};
template <typename T>
struct Converter<T, T> {
  __device__ __forceinline__ static T run(T x) { return x; }
};
template <>
struct Converter<Bf16, float> {
  __device__ __forceinline__ static Bf16 run(float x) { return round_bf16(x); }
};
template <>
struct Converter<float, Bf16> {
  __device__ __forceinline__ static float run(Bf16 x) { return bf16_to_float(x); }
};

// Calls fn(T{}) with the device type of `type`.
template <typename Fn>
__host__ void dispatch_elem(ElemType type, Fn&& fn) {
  switch (type) {
    case ElemType::kF64: fn(double{}); return;
    case ElemType::kF32: fn(float{}); return;
    case ElemType::kBF16: fn(Bf16{}); return;
    case ElemType::kI32: fn(int32_t{}); return;
    case ElemType::kI64: fn(int64_t{}); return;
  }
}

// fn(T{}) for the floating element types; other types are never passed (cuda_backend.cc admits floating
// types only for the kernels that use this).
template <typename Fn>
__host__ void dispatch_floating_elem(ElemType type, Fn&& fn) {
  switch (type) {
    case ElemType::kF64: fn(double{}); return;
    case ElemType::kF32: fn(float{}); return;
    case ElemType::kBF16: fn(Bf16{}); return;
    default: return;
  }
}

constexpr int kElementwiseThreads = 256;

// Blocks for an elementwise grid over n elements. Kernels use grid-stride loops, so the grid is capped:
// 8192 blocks of 256 threads fill an H100 (132 SMs x 2048 threads) several times over.
inline unsigned elementwise_blocks(int64_t n) {
  constexpr int64_t kMaxBlocks = 8192;
  const int64_t blocks = (n + kElementwiseThreads - 1) / kElementwiseThreads;
  return static_cast<unsigned>(blocks < kMaxBlocks ? (blocks > 0 ? blocks : 1) : kMaxBlocks);
}

}  // namespace dtrn::cuda

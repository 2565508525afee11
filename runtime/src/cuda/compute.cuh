// Device-side arithmetic shared by the training kernels (activation.cu, reduce.cu, index.cu,
// rmsnorm.cu, rope.cu, softmax.cu, cross_entropy.cu, adamw.cu): the compute type of each element
// type, conversions into and out of it, packed 16-byte loads, and the rows a block walks.
//
// Compute<T>: bf16 and f32 compute in f32, f64 in f64; a bf16 result is the f32 result rounded once.
// Kernels that reduce (sums, norms, log-sum-exp) accumulate in double whatever T is, so that a
// result differs from the CPU backend's (which accumulates in double) only by the final rounding.
#pragma once

#include <cstdint>

#include "cuda/device_types.cuh"

namespace dtrn::cuda {

template <typename T>
struct ComputeOf {
  using type = T;
};
template <>
struct ComputeOf<Bf16> {
  using type = float;
};
template <typename T>
using Compute = typename ComputeOf<T>::type;

template <typename T>
__device__ __forceinline__ Compute<T> to_compute(T x) {
  return Converter<Compute<T>, T>::run(x);
}
template <typename T>
__device__ __forceinline__ T from_compute(Compute<T> x) {
  return Converter<T, Compute<T>>::run(x);
}
// Rounds a double to T as the CPU backend stores one (bf16 through f32, see device_types.cuh).
template <typename T>
__device__ __forceinline__ T from_double(double x) {
  return FromDouble<T>::run(x);
}

// Multiply and add with one rounding each: nvcc would otherwise contract a*x + b into an FMA, which
// the CPU reference (built without FMA) does not do, and elementwise results must match it exactly.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

__device__ __forceinline__ float exp_of(float x) { return expf(x); }
__device__ __forceinline__ double exp_of(double x) { return exp(x); }

// W consecutive elements loaded or stored as one access of sizeof(T) * W bytes (W = 16 / sizeof(T)
// gives 128-bit accesses); the address must be aligned to that size.
template <typename T, int W>
struct alignas(sizeof(T) * W) Chunk {
  T v[W];
};

// Elements per 16-byte chunk of T.
template <typename T>
constexpr int kChunkElems = static_cast<int>(16 / sizeof(T));

// True when every row of a [rows, cols] matrix of `elem_bytes` elements at `base` starts on a
// 16-byte boundary, so row kernels may use Chunk loads.
inline bool rows_aligned16(const void* base, int64_t cols, int elem_bytes) {
  return reinterpret_cast<uintptr_t>(base) % 16 == 0 && (cols * elem_bytes) % 16 == 0;
}

// Calls f(i, row[i]) for this thread's share of row[0, count) in a fixed order (so reductions over
// it are reproducible): chunks of W elements with thread t taking chunks t, t + blockDim, ..., then
// the tail past the last whole chunk one element at a time. W > 1 needs a 16-byte-aligned row.
template <int W, typename T, typename F>
__device__ __forceinline__ void visit_row(const T* row, int64_t count, F&& f) {
  const int64_t chunks = W > 1 ? count / W : 0;
  for (int64_t c = threadIdx.x; c < chunks; c += blockDim.x) {
    const Chunk<T, W> values = reinterpret_cast<const Chunk<T, W>*>(row)[c];
#pragma unroll
    for (int e = 0; e < W; ++e) f(c * W + e, values.v[e]);
  }
  for (int64_t i = chunks * W + threadIdx.x; i < count; i += blockDim.x) f(i, row[i]);
}

// out[i] = f(i, in[i]) over [0, count) with visit_row's split of the work; in may equal out (each
// element is read and written by the same thread).
template <int W, typename T, typename F>
__device__ __forceinline__ void transform_row(const T* in, T* out, int64_t count, F&& f) {
  const int64_t chunks = W > 1 ? count / W : 0;
  for (int64_t c = threadIdx.x; c < chunks; c += blockDim.x) {
    const Chunk<T, W> values = reinterpret_cast<const Chunk<T, W>*>(in)[c];
    Chunk<T, W> result;
#pragma unroll
    for (int e = 0; e < W; ++e) result.v[e] = f(c * W + e, values.v[e]);
    reinterpret_cast<Chunk<T, W>*>(out)[c] = result;
  }
  for (int64_t i = chunks * W + threadIdx.x; i < count; i += blockDim.x) out[i] = f(i, in[i]);
}

}  // namespace dtrn::cuda

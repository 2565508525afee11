// The thread layout and shared-memory staging of the generic attention kernels (attention.h), written
// once for the forward (attention_forward.cu) and the backward (attention_backward.cu).
//
// Note [Generic attention layout]
// A block owns kRows rows of one side (query rows for the forward and dq, key rows for dk and dv) and
// walks the rows of the other side kChunk at a time, staged in shared memory in the accumulation type.
// Thread t serves owned row t / kGroups and, of that row, the columns c = t % kGroups + kGroups * u: it
// forms partial dot products over its columns, and the kGroups threads of the row (adjacent lanes of one
// warp) complete them with a butterfly of shuffles, which leaves the same bits in each of them
// (floating addition is commutative). Every accumulator element (o, dq, dk, dv) is owned by exactly one
// thread, so no two threads ever add into the same place and all sums run in a fixed order. Owned rows
// are padded to a stride of kGroups modulo 32 words, so the threads of a warp hit distinct banks.
#pragma once

#include <cstdint>

#include "cuda/attention_common.cuh"

namespace dtrn::cuda {

template <typename Acc>
struct GenericLayout {
  // f64 accumulators take twice the shared memory; 16 owned rows keep D = 256 within an SM's 227 KiB.
  static constexpr int kRows = sizeof(Acc) == 8 ? 16 : 32;
  static constexpr int kGroups = kAttentionThreads / kRows;
  static constexpr int kChunk = 16;

  // Elements between owned rows in shared memory.
  __host__ __device__ static int stride(int d) { return (d + 31) / 32 * 32 + kGroups; }
};

__device__ __forceinline__ float acc_exp(float x) { return expf(x); }
__device__ __forceinline__ double acc_exp(double x) { return exp(x); }
__device__ __forceinline__ float acc_log(float x) { return logf(x); }
__device__ __forceinline__ double acc_log(double x) { return log(x); }

// The sum of x over the kGroups adjacent lanes serving one row, in every one of them.
template <int kGroups, typename Acc>
__device__ __forceinline__ Acc row_group_sum(Acc x) {
#pragma unroll
  for (int offset = kGroups / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// dst[r * dst_stride + c] = src[r * src_stride + c] converted, for r < rows, c < d; rows >= valid_rows are
// zero (tile rows past the end of the sequence). All threads of the block take part.
template <typename T, typename Acc>
__device__ __forceinline__ void stage_rows(Acc* dst, int dst_stride, const T* src, int64_t src_stride,
                                           int rows, int valid_rows, int d) {
  for (int idx = threadIdx.x; idx < rows * d; idx += kAttentionThreads) {
    const int r = idx / d, c = idx % d;
    dst[r * dst_stride + c] = r < valid_rows ? Converter<Acc, T>::run(src[r * src_stride + c]) : Acc(0);
  }
}

}  // namespace dtrn::cuda

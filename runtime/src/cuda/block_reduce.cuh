// Deterministic reductions inside a thread block, and the second pass of two-pass column sums.
//
// Note [Deterministic reductions]
// Training must be bitwise reproducible (the gradient norm decides clipping, hence the whole run),
// so no reduction here uses atomics or depends on scheduling: a warp combines its lanes in a fixed
// butterfly, a block combines its warps in warp order, and a reduction too long for one block
// writes per-chunk partial sums (chunks fixed by the shape alone) that a second kernel adds in an
// order fixed by the shape too. The same shape on the same GPU model therefore always gives the
// same bits.
#pragma once

#include <cstdint>

#include "cuda/compute.cuh"

namespace dtrn::cuda {

template <typename T>
__device__ __forceinline__ T shuffle_xor(T v, int mask) {
  return __shfl_xor_sync(0xffffffffu, v, mask);
}

struct Plus {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    return a + b;
  }
};

// Every lane ends with op over the warp's 32 values. op must be commutative bit for bit (a + b and
// b + a are the same float), which makes all lanes agree.
template <typename T, typename Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
#pragma unroll
  for (int mask = 16; mask > 0; mask >>= 1) v = op(v, shuffle_xor(v, mask));
  return v;
}

// Every thread of the block gets op over all threads' values. blockDim.x must be a multiple of 32
// and every thread must call it (it synchronises); it may be called repeatedly in one kernel.
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T identity) {
  __shared__ T partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = static_cast<int>(blockDim.x >> 5);
  v = warp_reduce(v, op);
  __syncthreads();  // an earlier call's readers are done with `partial`
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  return warp_reduce(lane < warps ? partial[lane] : identity, op);
}

__device__ __forceinline__ double block_sum(double v) { return block_reduce(v, Plus{}, 0.0); }

// The second pass of a two-pass column sum: out[o, i] = sum over s < splits of partial[o, s, i],
// rounded once to Out. A block per 32 columns of one o: warp k sums the splits s = k, k + 8, ... in
// order, then the 8 warp sums are added in warp order (an order fixed by the shape). One thread per
// column would leave most of the GPU idle: a 960-column sum is 4 blocks.
constexpr int kFinishWarps = 8;

template <typename Out>
__global__ void __launch_bounds__(32 * kFinishWarps)
    finish_column_sums_kernel(const double* partial, int64_t splits, int64_t inner, Out* out) {
  __shared__ double sums[kFinishWarps][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t groups = (inner + 31) / 32;
  const int64_t o = blockIdx.x / groups, i = (blockIdx.x % groups) * 32 + lane;
  double acc = 0;
  if (i < inner) {
    const double* p = partial + o * splits * inner + i;
    for (int64_t s = warp; s < splits; s += kFinishWarps) acc += p[s * inner];
  }
  sums[warp][lane] = acc;
  __syncthreads();
  if (warp == 0 && i < inner) {
    double total = 0;
    for (int k = 0; k < kFinishWarps; ++k) total += sums[k][lane];
    out[o * inner + i] = from_double<Out>(total);
  }
}

template <typename Out>
void launch_finish_column_sums(const double* partial, int64_t outer, int64_t splits, int64_t inner,
                               Out* out, cudaStream_t stream) {
  const int64_t blocks = outer * ((inner + 31) / 32);
  if (blocks == 0) return;
  finish_column_sums_kernel<<<static_cast<unsigned>(blocks), 32 * kFinishWarps, 0, stream>>>(
      partial, splits, inner, out);
}

}  // namespace dtrn::cuda

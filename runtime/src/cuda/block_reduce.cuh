// Deterministic reductions inside a thread block, and the second pass of two-pass column sums.
//
// Note [Deterministic reductions]
// Training must be bitwise reproducible (the gradient norm decides clipping, hence the whole run), so
// no reduction here uses atomics or depends on scheduling: a warp combines its lanes in a fixed
// butterfly, a block combines its warps in warp order, and a reduction too long for one block writes
// per-chunk partial sums (chunks fixed by the shape alone) that a second kernel adds in chunk order.
// The same shape on the same GPU model therefore always gives the same bits.
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

// The second pass of a two-pass column sum: out[o, i] = sum over s < splits of
// partial[o, s, i] in order s = 0, 1, ..., rounded once to Out.
template <typename Out>
__global__ void finish_column_sums_kernel(const double* partial, int64_t outer, int64_t splits,
                                          int64_t inner, Out* out) {
  const int64_t total = outer * inner;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t o = t / inner, i = t % inner;
    const double* p = partial + o * splits * inner + i;
    double acc = 0;
    for (int64_t s = 0; s < splits; ++s) acc += p[s * inner];
    out[t] = from_double<Out>(acc);
  }
}

}  // namespace dtrn::cuda

// The running (max, sum of exponentials) of a row, for softmax and cross-entropy: one read of the row
// gives its log-sum-exp, stable for any magnitudes (Milakov and Gimelshein, "Online normalizer
// calculation for softmax", 2018). The maximum is kept in the compute type, the sum in double; each
// term exp(x - max) is computed in the compute type (expf for f32 and bf16).
#pragma once

#include <math_constants.h>

#include "cuda/block_reduce.cuh"

namespace dtrn::cuda {

template <typename M>
struct MaxSum {
  M max;       // -inf for an empty row
  double sum;  // of exp(x - max) over the row
};

template <typename M>
__device__ __forceinline__ M negative_infinity();
template <>
__device__ __forceinline__ float negative_infinity<float>() {
  return -CUDART_INF_F;
}
template <>
__device__ __forceinline__ double negative_infinity<double>() {
  return -CUDART_INF;
}

template <typename M>
__device__ __forceinline__ MaxSum<M> empty_max_sum() {
  return {negative_infinity<M>(), 0.0};
}

// exp(d) for d <= 0 in double, computed in M (-inf gives 0).
template <typename M>
__device__ __forceinline__ double exp_term(M d) {
  return static_cast<double>(exp_of(d));
}

// Adds one element. An element of -inf adds nothing (and must not form -inf - -inf).
template <typename M>
__device__ __forceinline__ void add_element(MaxSum<M>& st, M x) {
  if (x > st.max) {
    st.sum = st.sum * exp_term(st.max - x) + 1.0;
    st.max = x;
  } else if (x != negative_infinity<M>()) {
    st.sum += exp_term(x - st.max);
  }
}

// Symmetric in a and b bit for bit (one max, one commutative addition), as warp_reduce requires.
struct CombineMaxSum {
  template <typename M>
  __device__ __forceinline__ MaxSum<M> operator()(MaxSum<M> a, MaxSum<M> b) const {
    const M m = a.max > b.max ? a.max : b.max;
    if (m == negative_infinity<M>()) return {m, 0.0};
    return {m, a.sum * exp_term(a.max - m) + b.sum * exp_term(b.max - m)};
  }
};

template <typename M>
__device__ __forceinline__ MaxSum<M> shuffle_xor(MaxSum<M> v, int mask) {
  return {__shfl_xor_sync(0xffffffffu, v.max, mask), __shfl_xor_sync(0xffffffffu, v.sum, mask)};
}

// log(sum exp) of the row from its combined state (-inf for an empty or all -inf row).
template <typename M>
__device__ __forceinline__ double log_sum_exp(MaxSum<M> st) {
  return static_cast<double>(st.max) + log(st.sum);
}

}  // namespace dtrn::cuda

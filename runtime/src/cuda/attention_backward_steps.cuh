// The per-tile steps of the bf16 attention backwards (attention_tc_backward.cu on mma.sync,
// attention_wgmma_backward.cu on wgmma) on the score fragments a lane holds, laid out as
// attention_softmax.cuh describes: rows lane / 4 and lane / 4 + 8 of the warp's 16, columns
// 8 j + 2 (lane % 4) + {0, 1} of tile j.
//
// Probabilities are rebuilt from the forward's lse as P = exp2(s scale log2 e - lse log2 e), which is
// exp(scale s - lse), and the score gradients are dS = P (dP - delta). The dq kernels hold scores by
// query rows (S = Q K^T: lse and delta per row); the dk/dv kernels hold them transposed, by key rows
// (S^T = K Q^T: lse and delta per column). Masked scores are set to -inf first, so that P = 0. P and dS
// are separate steps so that the wgmma kernels can compute P while the product giving dP still runs.
#pragma once

#include "cuda/attention_softmax.cuh"

namespace dtrn::cuda {

// Transposed scores (rows keys, columns queries): masks the queries before the lane's keys and the
// columns at or past `valid_queries`. The lane's keys are key0 and key0 + 8, its columns the queries
// query0 + col (positions within the sequence). Keys past the sequence end come after every live
// query, so `key > query` masks them too.
template <int kTiles>
__device__ __forceinline__ void mask_queries_before_keys(float (&s)[kTiles][4], int key0, int query0,
                                                         int valid_queries) {
  constexpr float kNegInf = -__builtin_huge_valf();
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int col = j * 8 + (lane % 4) * 2 + (e & 1);
      if (col >= valid_queries || key0 + (e / 2) * 8 > query0 + col) s[j][e] = kNegInf;
    }
  }
}

// Transposed: s = S^T becomes P^T, with lse of the column's query at lse[col] in shared (or global)
// memory.
template <int kTiles>
__device__ __forceinline__ void probabilities_by_column(float (&s)[kTiles][4], float scale_log2,
                                                        const float* lse) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int col = j * 8 + (lane % 4) * 2 + (e & 1);
      s[j][e] = fast_exp2(fmaf(s[j][e], scale_log2, -lse[col] * kLog2e));
    }
  }
}

// Transposed: dp = dP^T becomes dS^T = P^T (dP^T - delta), with delta of the column's query at
// delta[col].
template <int kTiles>
__device__ __forceinline__ void score_gradients_by_column(const float (&p)[kTiles][4],
                                                          float (&dp)[kTiles][4], const float* delta) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) dp[j][e] = p[j][e] * (dp[j][e] - delta[j * 8 + (lane % 4) * 2 + (e & 1)]);
  }
}

// By query rows: s = S becomes P, with lse log2 e of the lane's two rows in lse_log2[0..1] (a row past
// the sequence end has lse_log2 = +inf: P = 0).
template <int kTiles>
__device__ __forceinline__ void probabilities_by_row(float (&s)[kTiles][4], float scale_log2,
                                                     const float (&lse_log2)[2]) {
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) s[j][e] = fast_exp2(fmaf(s[j][e], scale_log2, -lse_log2[e / 2]));
  }
}

// By query rows: dp = dP becomes dS = P (dP - delta), with delta of the lane's two rows in delta[0..1].
template <int kTiles>
__device__ __forceinline__ void score_gradients_by_row(const float (&p)[kTiles][4],
                                                       float (&dp)[kTiles][4],
                                                       const float (&delta)[2]) {
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) dp[j][e] = p[j][e] * (dp[j][e] - delta[e / 2]);
  }
}

}  // namespace dtrn::cuda

// The per-tile steps of the bf16 attention forwards (attention_tc_forward.cu on mma.sync,
// attention_wgmma_forward.cu on wgmma) on the score and output fragments a lane holds: both
// instructions give a warp's lane l the rows l / 4 and l / 4 + 8 of its 16-row slice, elements 0, 1 of
// every 8-column tile in the first row and 2, 3 in the second, columns 2 (l % 4) and + 1 (Note [mma.sync
// m16n8k16 fragments], Note [wgmma m64nNk16 fragments]). So a row's 4 lanes are l ^ 1, l ^ 2 apart.
//
// The online softmax (FlashAttention-2): per key tile the running row maximum m of the unscaled scores
// and the denominator l are updated, the rescale exp2((m_old - m_new) c), c = scale * log2 e, is applied
// to l and to the output accumulator once per tile, and P = exp(scale (s - m)) = exp2(s c - m c), one
// fused multiply-add and one exp2 per score, replaces the scores. l stays a per-lane partial sum until
// the end; finish_rows reduces it and writes out = o / l and lse = m scale + ln l (natural log, as the
// CPU reference stores it).
#pragma once

#include "cuda/attention_tc.cuh"

namespace dtrn::cuda {

// Sets the scores of keys after their query to -inf: the lane's keys are key0 + 8 j + 2 (l % 4) + {0, 1}
// in tile j, its rows the queries query0 and query0 + 8 (positions within the sequence).
template <int kTiles>
__device__ __forceinline__ void mask_causal(float (&s)[kTiles][4], int key0, int query0) {
  constexpr float kNegInf = -__builtin_huge_valf();
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int key = key0 + j * 8 + (lane % 4) * 2 + (e & 1);
      if (key > query0 + (e / 2) * 8) s[j][e] = kNegInf;
    }
  }
}

// One key tile of the online softmax over the scores s (masked ones -inf) of the lane's two rows:
// updates m and l, overwrites s with P and returns in `correction` the factor by which the output
// accumulated so far must be rescaled (rescale_rows).
template <int kTiles>
__device__ __forceinline__ void online_softmax_tile(float (&s)[kTiles][4], float (&m)[2], float (&l)[2],
                                                    float scale_log2, float (&correction)[2]) {
  constexpr float kNegInf = -__builtin_huge_valf();
  float tile_max[2] = {kNegInf, kNegInf};
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) tile_max[e / 2] = fmaxf(tile_max[e / 2], s[j][e]);
  }
  float m_scaled[2];  // m_new c
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    float mx = tile_max[half];
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m[half], mx);
    // Key 0 is unmasked for every row in the first tile, so m_new is finite; the guard keeps a fully
    // masked row (none occur) from computing inf - inf.
    m_scaled[half] = m_new == kNegInf ? 0.f : m_new * scale_log2;
    correction[half] = fast_exp2(m[half] * scale_log2 - m_scaled[half]);
    m[half] = m_new;
    l[half] *= correction[half];
  }
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float p = fast_exp2(fmaf(s[j][e], scale_log2, -m_scaled[e / 2]));
      s[j][e] = p;
      l[e / 2] += p;
    }
  }
}

// o's first row times factor[0], its second times factor[1].
template <int kTiles>
__device__ __forceinline__ void rescale_rows(float (&o)[kTiles][4], const float (&factor)[2]) {
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
    o[j][0] *= factor[0];
    o[j][1] *= factor[0];
    o[j][2] *= factor[1];
    o[j][3] *= factor[1];
  }
}

// Writes the lane's two rows, `row` and row + 8 of the query tile that starts at packed row `packed0`,
// where they are below `valid_rows`: out = o / l (bf16, [N, H, D]) and lse = m scale + ln l ([H, N]).
template <int D>
__device__ __forceinline__ void finish_rows(const float (&o)[D / 8][4], const float (&m)[2], float (&l)[2],
                                           int row, int valid_rows, int64_t packed0, int head,
                                           const AttentionShape& shape, Bf16* out, float* lse) {
  const int lane = threadIdx.x % 32;
  const float scale = static_cast<float>(shape.scale);
  float inv_l[2];
  Bf16* dst[2];
  bool valid[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    l[half] += __shfl_xor_sync(0xffffffffu, l[half], 1);
    l[half] += __shfl_xor_sync(0xffffffffu, l[half], 2);
    inv_l[half] = 1.f / l[half];
    const int r = row + half * 8;
    const int64_t packed = packed0 + r;
    valid[half] = r < valid_rows;
    dst[half] = out + (packed * shape.h + head) * D;
    if (valid[half] && lane % 4 == 0) lse[head * shape.n + packed] = m[half] * scale + logf(l[half]);
  }
  store_rows<D>(o, inv_l, dst, valid);
}

}  // namespace dtrn::cuda

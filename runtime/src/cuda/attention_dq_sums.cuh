// The fused wgmma attention backward's dq (attention_wgmma_backward.cu's dk/dv kernel with
// kFusedDq): the fixed-point sums it adds each step's dS K to, the bulk reductions that add them,
// and the launchers of the kernels around it (attention_dq_sums.cu).
//
// Note [Deterministic dq in fixed point]
// In the fused backward every dk/dv block (128 keys of one KV head) also computes, per step, the
// piece dS K of dq for the step's 64 queries of one head, and the pieces of the 1 .. N / 128 blocks
// that reach a query must be summed. Float additions in arrival order would make dq change from run
// to run; a fixed order makes blocks wait for each other (the mma.sync fused backward's counters,
// Note [Deterministic dq of the fused backward]). Integer additions commute: the blocks add their
// pieces in whatever order they come, in 32-bit fixed point, and every order gives the same bits.
// The scale is per query row i and head: a power of two f_i such that every partial sum of row i's
// pieces stays below 2^29 in magnitude after scaling. With dS_ij = P_ij (dP_ij - delta_i) and
// sum_j P_ij = 1, any partial sum over keys J obeys
//   |sum_{j in J} dS_ij K_jd| <= max|K| * sum_j P_ij |dP_ij - delta_i|
//                             <= max|K| * (|dO_i|_2 * max_j |V_j|_2 + |delta_i|) = B_i,
// since |dP_ij| = |dO_i . V_j| <= |dO_i|_2 |V_j|_2. A kernel before the backward finds max|K| and
// max_j |V_j|_2 over the whole tensors (attention_kv_bound_kernel), the delta preprocess computes
// B_i with a margin of 1/32 (rounding of the norms in f32, of dS to bf16, of sum_j P_ij near one),
// and f_i = 2^(29 - e_i) where B_i < 2^e_i. Each piece is scaled by f_i (exact: a power of two) and
// rounded to an integer (half a unit each, N / 128 pieces at most), so the sums stay below 2^30
// with room to spare, and below 2^31 always. A unit is B_i 2^-29 or less: 2^-29 of the bound
// against 2^-24 of the element for f32's own rounding; the bound exceeds typical |dq_id| by a few
// orders of magnitude (the factors above are worst cases), which still leaves dq well inside what
// its bf16 rounding (2^-9) keeps. A row whose bound is not finite (inf or NaN in its dO or anywhere
// in K or V) gets f_i = NaN, and dq_from_sums writes NaN there: non-finite inputs give non-finite
// gradients, as float sums would, never a silent zero. Layout of the sums (int32, zeroed before the
// backward): one tile of 64 query rows per (sequence s, query tile t of the sequence, head h), tile
// index floor(cu_s / 64) + s + t (distinct for distinct (s, t), and fewer than floor(N / 64) + S),
// then head, then the half of D (32 columns each, one per consumer warpgroup), then the warpgroup's
// accumulator fragment in thread order: 4 chunks of 16 bytes (fragment tiles j = 0..3, Note [wgmma
// m64nNk16 fragments]) of its 128 threads, chunk-major, so that the threads' shared-memory stores
// and the bulk reduction's reads are both contiguous. A half tile is 8 KB, added to global memory
// by one `cp.reduce.async.bulk .add.s32` from shared memory.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "cuda/attention.h"

namespace dtrn::cuda {

constexpr int kDqSumRows = 64;  // query rows of a sums tile: one dk/dv step
constexpr int kDqSumCols = 32;  // head dims of a half tile: one consumer warpgroup's
constexpr int kDqSumHalfInts = kDqSumRows * kDqSumCols;  // 2048: 128 threads x 16
constexpr float kDqFixedPointLimit = 536870912.f;        // 2^29

// Tiles of the sums: floor(N / 64) + S (the Note).
inline int64_t dq_sum_tiles(const AttentionShape& shape) {
  return shape.n / kDqSumRows + shape.num_seqs;
}

// The fused wgmma backward's workspace: the K and V bounds (4 words, zeroed), the sums (zeroed),
// and the per-row factors [H, N] (f32).
struct DqSumsWorkspace {
  float* bound;         // [0] max |K|, [1] max_j |V_j|_2^2 (as float bits, by unsigned max)
  int32_t* sums;        // dq_sum_tiles x H x 2 half tiles
  float* factor;        // [H, N]
  size_t zeroed_bytes;  // bound and sums: one memset from `bound`
};
size_t dq_sums_workspace_bytes(const AttentionShape& shape);
DqSumsWorkspace dq_sums_workspace(const AttentionShape& shape, void* workspace);

// Zeroes the bounds and sums and finds max |K| and max_j |V_j|_2 (bf16 k, v [N, G, D]).
void launch_attention_kv_bound(const AttentionShape& shape, const void* k, const void* v,
                               const DqSumsWorkspace& ws, cudaStream_t stream);
// dq [N, H, D] bf16 = scale * sums / factor, NaN where the factor is not finite.
void launch_dq_from_sums(const AttentionShape& shape, const int32_t* cu_seqlens,
                         const DqSumsWorkspace& ws, void* dq, cudaStream_t stream);

#if defined(__CUDACC__)

// The sums' half tile of (sequence `seq` starting at packed row `start`, query rows from `q_lo` of
// it, head `head`, half `half`).
__device__ __forceinline__ int32_t* dq_sum_half_tile(int32_t* sums, int heads, int64_t start,
                                                     int seq, int q_lo, int head, int half) {
  const int64_t tile = start / kDqSumRows + seq + q_lo / kDqSumRows;
  return sums + ((tile * heads + head) * 2 + half) * int64_t{kDqSumHalfInts};
}

// f_i of the Note from max |K|, max_j |V_j|_2^2, |dO_i|_2^2 and delta_i.
__device__ __forceinline__ float dq_fixed_point_factor(float k_max, float v_norm2_max,
                                                       float dout_norm2, float delta) {
  const float bound =
      k_max * (sqrtf(dout_norm2) * sqrtf(v_norm2_max) + fabsf(delta)) * (1.f + 1.f / 32.f);
  if (!isfinite(bound)) return __int_as_float(0x7fffffff);
  if (bound == 0.f) return 1.f;
  int e = 0;
  frexpf(bound, &e);  // bound < 2^e
  return ldexpf(1.f, max(-100, min(100, 29 - e)));
}

// Adds `bytes` (a multiple of 16) of int32 from shared memory at `smem` to global memory at `gmem`,
// asynchronously (the bulk copy engine); one thread issues it, after a proxy fence and a barrier
// made every thread's stores of the source visible to it.
__device__ __forceinline__ void bulk_reduce_add_s32(int32_t* gmem, uint32_t smem, uint32_t bytes) {
  asm volatile(
      "cp.reduce.async.bulk.global.shared::cta.bulk_group.add.s32 [%0], [%1], %2;\n" ::"l"(gmem),
      "r"(smem), "r"(bytes)
      : "memory");
}

__device__ __forceinline__ void bulk_commit() {
  asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
}

// Waits until at most kPending of this thread's bulk groups still read their shared source.
template <int kPending>
__device__ __forceinline__ void bulk_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(kPending) : "memory");
}

// Waits until this thread's bulk groups are complete (their writes to global memory done).
__device__ __forceinline__ void bulk_wait_all() {
  asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
}

#endif

}  // namespace dtrn::cuda

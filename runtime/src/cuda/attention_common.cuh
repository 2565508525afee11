// Device code shared by the attention kernels (attention.h): the statistics type of each element
// type, the tile grid of Note [Attention grids without host synchronisation] and the block-wide searches
// that map a block to its (sequence, tile), and the declarations of the per-implementation launchers
// that attention_forward.cu and attention_backward.cu dispatch to.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cuda/attention.h"
#include "cuda/block_reduce.cuh"
#include "cuda/device_types.cuh"

namespace dtrn::cuda {

// The generic kernels run 4 warps per block; the tensor-core kernels run kTcThreads (attention_tc.cuh).
constexpr int kAttentionWarps = 4;
constexpr int kAttentionThreads = kAttentionWarps * 32;

// The accumulation and statistics type: f32 for f32 and bf16 elements, f64 for f64.
template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};

// Blocks covering every tile of `tile_rows` rows of every sequence (the bound of the Note).
inline unsigned attention_tile_blocks(const AttentionShape& shape, int tile_rows) {
  return static_cast<unsigned>((shape.n + tile_rows - 1) / tile_rows + shape.num_seqs);
}

struct SeqTile {
  int64_t start;  // first packed row of the sequence
  int len;        // rows of the sequence
  int tile;       // tile index within the sequence: rows [tile * R, min((tile + 1) * R, len))
  bool found;     // false for the surplus blocks
};

// Sequence s's rows, its offsets clamped into [0, N] and made non-decreasing so that invalid offsets
// stay inside the tensors (see the Note).
struct SeqRows {
  int64_t start;
  int len;
};
__device__ __forceinline__ SeqRows sequence_rows(const int32_t* cu, int s, int64_t n) {
  const int64_t lo = min(max(static_cast<int64_t>(cu[s]), int64_t{0}), n);
  const int64_t hi = min(max(static_cast<int64_t>(cu[s + 1]), lo), n);
  return SeqRows{lo, static_cast<int>(hi - lo)};
}

__device__ __forceinline__ int sequence_tiles(int len, int tile_rows) {
  return (len + tile_rows - 1) / tile_rows;
}

struct SeqRank {
  SeqRows rows;
  long long rank;  // `target` minus the counts of the sequences before
  bool found;
};

// The sequence where a running count over the sequences in order passes `target`: the s with
// sum_{s' < s} count(s') <= target < sum_{s' <= s} count(s'), count(rows) >= 0. Sequences are scanned
// kThreads (the block size, a multiple of 32) at a time with a block-wide inclusive prefix sum of their
// counts. Every thread of the block must call it, at most once per kernel (its shared result is not
// guarded against a next call); the result is the same in every thread.
template <int kThreads, typename Count>
__device__ inline SeqRank find_sequence(const int32_t* cu, int num_seqs, int64_t n, long long target,
                                        Count count) {
  constexpr int kWarps = kThreads / 32;
  __shared__ long long warp_totals[kWarps];
  __shared__ SeqRank found;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (threadIdx.x == 0) found = SeqRank{SeqRows{0, 0}, 0, false};
  __syncthreads();
  long long before = 0;  // counts of the sequences of earlier rounds
  for (int base = 0; base < num_seqs; base += kThreads) {
    const int s = base + threadIdx.x;
    SeqRows rows{0, 0};
    long long c = 0;
    if (s < num_seqs) {
      rows = sequence_rows(cu, s, n);
      c = count(rows);
    }
    long long inclusive = c;
    for (int offset = 1; offset < 32; offset *= 2) {
      const long long y = __shfl_up_sync(0xffffffffu, inclusive, offset);
      if (lane >= offset) inclusive += y;
    }
    if (lane == 31) warp_totals[warp] = inclusive;
    __syncthreads();
    long long round_total = 0;
    for (int w = 0; w < kWarps; ++w) {
      if (w < warp) inclusive += warp_totals[w];
      round_total += warp_totals[w];
    }
    const long long first = before + inclusive - c;
    if (c > 0 && target >= first && target < first + c) found = SeqRank{rows, target - first, true};
    before += round_total;
    __syncthreads();  // publishes `found` and frees warp_totals for the next round
    if (found.found || before > target) break;
  }
  return found;
}

// The tile of block `block_tile` in the order: sequence 0's tiles, then sequence 1's, and so on; within a
// sequence, last tile first when `reverse` (causal work grows with the tile index for query tiles).
// Every thread of the block must call it, once; the result is the same in every thread.
template <int kThreads = kAttentionThreads>
__device__ inline SeqTile locate_tile(const int32_t* cu, int num_seqs, int64_t n, int tile_rows,
                                      int64_t block_tile, bool reverse) {
  const SeqRank f =
      find_sequence<kThreads>(cu, num_seqs, n, block_tile, [&](const SeqRows& rows) {
        return static_cast<long long>(sequence_tiles(rows.len, tile_rows));
      });
  if (!f.found) return SeqTile{0, 0, 0, false};
  const int local = static_cast<int>(f.rank);
  const int tile = reverse ? sequence_tiles(f.rows.len, tile_rows) - 1 - local : local;
  return SeqTile{f.rows.start, f.rows.len, tile, true};
}

// The tile of block `block_tile` in tile-major order: tile 0 of every sequence (sequences in order),
// then tile 1 of every sequence that has one, and so on; the first tiles of all sequences, the keys with
// the most causal work, come first. C(j) = sum_s min(tiles_s, j) blocks precede the tile-j blocks: a
// binary search over j (log2 of N / tile_rows block-wide sums) finds the block's j, find_sequence its
// sequence among those with more than j tiles. Every thread of the block must call it, once; the
// result is the same in every thread.
template <int kThreads>
__device__ inline SeqTile locate_tile_tile_major(const int32_t* cu, int num_seqs, int64_t n,
                                                 int tile_rows, int64_t block_tile) {
  const auto preceding = [&](long long j) {  // C(j)
    long long sum = 0;
    for (int s = threadIdx.x; s < num_seqs; s += kThreads) {
      sum += min(static_cast<long long>(sequence_tiles(sequence_rows(cu, s, n).len, tile_rows)), j);
    }
    return block_reduce(sum, Plus{}, 0LL);
  };
  // C(lo) <= block_tile < C(hi); no sequence has more than hi tiles, so C(hi) counts them all.
  long long lo = 0, preceding_lo = 0, hi = (n + tile_rows - 1) / tile_rows;
  if (preceding(hi) <= block_tile) return SeqTile{0, 0, 0, false};
  while (hi - lo > 1) {
    const long long mid = lo + (hi - lo) / 2, c = preceding(mid);
    if (c <= block_tile) {
      lo = mid;
      preceding_lo = c;
    } else {
      hi = mid;
    }
  }
  const SeqRank f = find_sequence<kThreads>(
      cu, num_seqs, n, block_tile - preceding_lo,
      [&](const SeqRows& rows) { return sequence_tiles(rows.len, tile_rows) > lo ? 1LL : 0LL; });
  return SeqTile{f.rows.start, f.rows.len, static_cast<int>(lo), f.found};
}

// Whether `kernel` runs on the tensor cores for this element type, shape and these operand pointers
// (bf16, D = 64 or 128, every pointer 16-byte aligned, not forced generic).
bool attention_uses_tensor_cores(ElemType type, const AttentionShape& shape, AttentionKernel kernel,
                                 const void* const* pointers, int num_pointers);

// The per-implementation launchers (same arguments as attention.h's, types already checked).
void generic_attention_forward(ElemType type, const AttentionShape& shape, const void* q,
                               const void* k, const void* v, const int32_t* cu_seqlens, void* out,
                               void* lse, cudaStream_t stream);
void generic_attention_backward(ElemType type, const AttentionShape& shape, const void* q,
                                const void* k, const void* v, const int32_t* cu_seqlens,
                                const void* lse, const void* dout, const void* delta, void* dq,
                                void* dk, void* dv, cudaStream_t stream);
void tensor_core_attention_forward(const AttentionShape& shape, const void* q, const void* k,
                                   const void* v, const int32_t* cu_seqlens, void* out, float* lse,
                                   cudaStream_t stream);
// Runs only where wgmma_available (wgmma_support.h); bf16, D = 64 or 128, 16-byte aligned pointers.
void wgmma_attention_forward(const AttentionShape& shape, const void* q, const void* k,
                             const void* v, const int32_t* cu_seqlens, void* out, float* lse,
                             cudaStream_t stream);
// The split backward on wgmma; runs only where wgmma_available, like wgmma_attention_forward.
void wgmma_attention_backward(const AttentionShape& shape, const void* q, const void* k,
                              const void* v, const int32_t* cu_seqlens, const float* lse,
                              const void* dout, const float* delta, void* dq, void* dk, void* dv,
                              cudaStream_t stream);
// fused_workspace: null for the split kernels, else tensor_core_fused_workspace_bytes of scratch for
// the fused one.
void tensor_core_attention_backward(const AttentionShape& shape, const void* q, const void* k,
                                    const void* v, const int32_t* cu_seqlens, const float* lse,
                                    const void* dout, const float* delta, void* dq, void* dk,
                                    void* dv, void* fused_workspace, cudaStream_t stream);
size_t tensor_core_fused_workspace_bytes(const AttentionShape& shape);

// Sets the dynamic shared memory limit of `kernel` (above the 48 KiB default) and checks the call.
void allow_shared_memory(const void* kernel, int bytes);

}  // namespace dtrn::cuda

// Device code shared by the attention kernels (attention.h): the statistics type of each element
// type, the tile grid of Note [Attention grids without host synchronisation], the block- and
// warp-wide searches that map a block to its (sequence, tile), and the declarations of the
// per-implementation launchers that attention_forward.cu and attention_backward.cu dispatch to.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "cuda/attention.h"
#include "cuda/block_reduce.cuh"
#include "cuda/device_types.cuh"
#include "dtrn/runtime/check.h"

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
  int seq;        // the sequence's index in cu_seqlens
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
  int seq;         // the sequence's index
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
  if (threadIdx.x == 0) found = SeqRank{SeqRows{0, 0}, 0, false, 0};
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
    if (c > 0 && target >= first && target < first + c) {
      found = SeqRank{rows, target - first, true, s};
    }
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
  if (!f.found) return SeqTile{0, 0, 0, false, 0};
  const int local = static_cast<int>(f.rank);
  const int tile = reverse ? sequence_tiles(f.rows.len, tile_rows) - 1 - local : local;
  return SeqTile{f.rows.start, f.rows.len, tile, true, f.seq};
}

// The sum over the sequences of count(tiles of the sequence), computed by one warp (every lane gets
// it).
template <typename Count>
__device__ __forceinline__ long long warp_sum_over_sequences(const int32_t* cu, int num_seqs,
                                                             int64_t n, int tile_rows, Count count) {
  long long sum = 0;
  for (int s = threadIdx.x % 32; s < num_seqs; s += 32) {
    sum += count(static_cast<long long>(sequence_tiles(sequence_rows(cu, s, n).len, tile_rows)));
  }
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  return sum;
}

// Tile `index` in tile-major order, computed by one warp alone (every lane calls it and gets the
// result), so that warps with different roles need no block-wide barrier. Tile-major: every
// sequence's first tile (sequences in order), then every sequence's second, and so on (`reverse`:
// last tiles first); the tiles with the most causal work come first. C(j) = sum_s min(tiles_s, j)
// tiles precede those of rank j (the j-th from the sequence's start, or from its end when
// `reverse`): a binary search over j (log2 of N / tile_rows warp sums) finds the item's rank, then
// a ballot over the sequences with more than j tiles its sequence.
__device__ inline SeqTile locate_tile_major_in_warp(const int32_t* cu, int num_seqs,
                                                    int64_t n, int tile_rows, long long index,
                                                    bool reverse) {
  const auto preceding = [&](long long j) {
    return warp_sum_over_sequences(cu, num_seqs, n, tile_rows,
                                   [j](long long t) { return min(t, j); });
  };
  // C(lo) <= index < C(hi); no sequence has more than hi tiles, so C(hi) counts them all.
  long long lo = 0, preceding_lo = 0, hi = (n + tile_rows - 1) / tile_rows;
  if (index < 0 || preceding(hi) <= index) return SeqTile{0, 0, 0, false, 0};
  while (hi - lo > 1) {
    const long long mid = lo + (hi - lo) / 2, c = preceding(mid);
    if (c <= index) {
      lo = mid;
      preceding_lo = c;
    } else {
      hi = mid;
    }
  }
  const int lane = threadIdx.x % 32;
  const long long rank = index - preceding_lo;  // among the sequences with more than lo tiles
  long long before = 0;
  for (int base = 0; base < num_seqs; base += 32) {
    const int s = base + lane;
    SeqRows rows{0, 0};
    if (s < num_seqs) rows = sequence_rows(cu, s, n);
    const unsigned has =
        __ballot_sync(0xffffffffu, s < num_seqs && sequence_tiles(rows.len, tile_rows) > lo);
    const int count = __popc(has);
    if (before + count > rank) {
      const int k = static_cast<int>(rank - before);  // the k-th set bit of `has`
      const bool mine = (has >> lane & 1u) && __popc(has & ((1u << lane) - 1u)) == k;
      const int src = __ffs(__ballot_sync(0xffffffffu, mine)) - 1;
      const int64_t start = __shfl_sync(0xffffffffu, rows.start, src);
      const int len = __shfl_sync(0xffffffffu, rows.len, src);
      const int last = sequence_tiles(len, tile_rows) - 1;
      return SeqTile{start, len, static_cast<int>(reverse ? last - lo : lo), true, base + src};
    }
    before += count;
  }
  return SeqTile{0, 0, 0, false, 0};
}

// locate_tile_major_in_warp for a whole block: the first warp searches and every thread reads the
// result from shared memory after a block barrier. The wgmma backward kernels take this one: with the
// search inlined into every warp, ptxas kept its results in the consumers' registers and spilled
// (about 140 bytes a thread in dk/dv); read back from shared memory, they cost nothing there. Every
// thread of the block must call it, once.
__device__ inline SeqTile locate_tile_major(const int32_t* cu, int num_seqs, int64_t n,
                                            int tile_rows, long long index, bool reverse) {
  __shared__ SeqTile found;
  if (threadIdx.x < 32) {
    const SeqTile t = locate_tile_major_in_warp(cu, num_seqs, n, tile_rows, index, reverse);
    if (threadIdx.x == 0) found = t;
  }
  __syncthreads();
  return found;
}

// Note [Attention block order]
// In the tensor-core kernels a block's work grows with its tile's causal reach: a query tile reads
// every key tile up to its own (forward, dq), a key tile is read by every query tile from its own on
// (dk/dv, which also walks the group's query heads: at 2 x 8192 rows and three query heads a KV
// head, 384 steps for a sequence's first key tile down to 6 for its last). Blocks start in launch
// order, so the longest should start early; but blocks running together should also read the same
// head's K and V (or Q and dO), which then stay in L2. The order, in groups of a head (a KV head for
// dk/dv):
//   - the groups in turn, a group's blocks (attention_tile_blocks of them, the surplus past its last
//     tile idle) tile-major over its sequences (locate_tile_major_in_warp: every sequence's longest
//     tile, then every second longest, ...);
//   - the first `lead` blocks of each group (its longest) start before the rest of the group before
//     it: L0, L1, R0, L2, R1, ..., L(G-1), R(G-2), R(G-1), L the leads and R the rests.
// A list schedule of the blocks' step counts on 132 SMs (15 heads, 5 KV heads;
// bench/attention_schedule.py) keeps 84% of them busy in the wgmma dk/dv kernel without leads (the
// last KV head's longest blocks start in the last wave) and 93% with a lead of a third of a group, at
// 2 x 8192 and 8 x 2048 alike; dq and the forward go from 93-94% to 98%; the groups of the blocks
// running together stay about two.
// Which block computes a tile changes no output bit.
struct OrderedBlock {
  int group;
  long long rank;  // in the group's tile-major order
};

// Block `block` of a grid of `groups` x `per_group` blocks in the order of the Note.
__device__ __forceinline__ OrderedBlock lead_ordered_block(long long block, long long per_group,
                                                           long long lead, int groups) {
  if (block < lead) return OrderedBlock{0, block};  // L0
  const long long rest = block - lead, round = rest / per_group + 1, r = rest % per_group;
  if (round == groups) return OrderedBlock{groups - 1, lead + r};  // R(G-1)
  return OrderedBlock{static_cast<int>(r < lead ? round : round - 1), r};  // L(round), R(round-1)
}

// The lead of the Note for groups of `per_group` blocks: a third of them, or the fraction (0 to 1)
// DTRN_ATTENTION_LEAD names, for measuring the order. Read on every launch, as
// cuda_backend_attention.cc reads the kernel choices, so that one process can compare leads.
inline long long attention_lead_blocks(long long per_group) {
  const char* env = std::getenv("DTRN_ATTENTION_LEAD");
  double fraction = 1.0 / 3;
  if (env != nullptr && *env != '\0') {
    char* end = nullptr;
    fraction = std::strtod(env, &end);
    DTRN_CHECK(*end == '\0' && fraction >= 0 && fraction <= 1,
               "DTRN_ATTENTION_LEAD must be a number from 0 to 1, got '", env, "'");
  }
  return std::llround(static_cast<double>(per_group) * fraction);
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
struct DqSumsWorkspace;
// The backward on wgmma; runs only where wgmma_available, like wgmma_attention_forward. With
// `fused_dq` null the split kernels (dk/dv, then dq); else (D = 64 only) the fused one, which adds
// dq's pieces to fused_dq's sums (Note [Deterministic dq in fixed point]) and leaves dq unwritten:
// the caller runs the kernels around it (attention_dq_sums.cuh).
void wgmma_attention_backward(const AttentionShape& shape, const void* q, const void* k,
                              const void* v, const int32_t* cu_seqlens, const float* lse,
                              const void* dout, const float* delta, void* dq, void* dk, void* dv,
                              const DqSumsWorkspace* fused_dq, cudaStream_t stream);
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

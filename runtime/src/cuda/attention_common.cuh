// Device code shared by the attention kernels (attention.h): the statistics type of each element
// type, the tile grid of Note [Attention grids without host synchronisation] and the block-wide search
// that maps a block to its (sequence, tile), and the declarations of the per-implementation launchers
// that attention_forward.cu and attention_backward.cu dispatch to.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cuda/attention.h"
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

// The tile of block `block_tile` in the order: sequence 0's tiles, then sequence 1's, and so on; within a
// sequence, last tile first when `reverse` (causal work grows with the tile index for query tiles).
// Sequences are scanned kThreads (the block size, a multiple of 32) at a time with a block-wide inclusive
// prefix sum of their tile counts. Every thread of the block must call it; the result is the same in
// every thread.
template <int kThreads = kAttentionThreads>
__device__ inline SeqTile locate_tile(const int32_t* cu, int num_seqs, int64_t n, int tile_rows,
                                      int64_t block_tile, bool reverse) {
  constexpr int kWarps = kThreads / 32;
  __shared__ long long warp_totals[kWarps];
  __shared__ SeqTile found;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (threadIdx.x == 0) found = SeqTile{0, 0, 0, false};
  __syncthreads();
  long long before = 0;  // tiles of the sequences of earlier rounds
  for (int base = 0; base < num_seqs; base += kThreads) {
    const int s = base + threadIdx.x;
    int64_t lo = 0;
    int len = 0;
    long long tiles = 0;
    if (s < num_seqs) {
      // Clamped so that invalid offsets stay inside [0, N] (see the Note).
      lo = min(max(static_cast<int64_t>(cu[s]), int64_t{0}), n);
      const int64_t hi = min(max(static_cast<int64_t>(cu[s + 1]), lo), n);
      len = static_cast<int>(hi - lo);
      tiles = (len + tile_rows - 1) / tile_rows;
    }
    long long inclusive = tiles;
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
    const long long first = before + inclusive - tiles;
    if (tiles > 0 && block_tile >= first && block_tile < first + tiles) {
      const int local = static_cast<int>(block_tile - first);
      found = SeqTile{lo, len, reverse ? static_cast<int>(tiles) - 1 - local : local, true};
    }
    before += round_total;
    __syncthreads();  // publishes `found` and frees warp_totals for the next round
    if (found.found || before > block_tile) break;
  }
  return found;
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

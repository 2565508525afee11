// The work of the persistent wgmma attention forward (attention_wgmma_forward.cu): which query
// tiles a block computes, in which order, and how one warp finds a tile's sequence.
//
// Note [wgmma forward schedule]
// The kernel launches one block per SM (its shared memory and registers allow no second one) and
// each block loops over work items: a block that ends with its last item lets the producer
// warpgroup load the next item's Q and first K/V tiles while the consumers still finish this one,
// where one block per item would leave the SM idle through every block's start (barrier setup, the
// first loads' latency) and end. Items are w = 0 .. W - 1, W = attention_tile_blocks(shape, 128) H:
// query tile x = w / H in locate_tile's order (sequence by sequence, a sequence's last and longest
// tile first), head w % H. Block b of G takes in round r the item r G + b when r is even and r G +
// G - 1 - b when r is odd: a round's items have similar key-tile counts but the earlier ones more,
// and the snake keeps one block from taking the largest of every round. x never decreases along a
// block's items, so the first item past the last query tile ends the block's work. Which block
// computes an item changes no output bit.
#pragma once

#include "cuda/attention_common.cuh"

namespace dtrn::cuda {

// Item `round` of block `block` of `blocks` (the Note); may be past the last item.
__device__ __forceinline__ long long wgmma_forward_item(int round, int block, int blocks) {
  const int offset = round % 2 == 0 ? block : blocks - 1 - block;
  return static_cast<long long>(round) * blocks + offset;
}

// locate_tile(cu, num_seqs, n, tile_rows, tile_index, /*reverse=*/true) computed by one warp alone
// (every lane calls it and gets the result), so that warps with different roles need no block-wide
// barrier: the sequences are scanned 32 at a time with a warp prefix sum of their tile counts.
__device__ inline SeqTile locate_tile_in_warp(const int32_t* cu, int num_seqs, int64_t n,
                                              int tile_rows, long long tile_index) {
  const int lane = threadIdx.x % 32;
  long long before = 0;  // tiles of the sequences of earlier rounds
  for (int base = 0; base < num_seqs && before <= tile_index; base += 32) {
    const int s = base + lane;
    SeqRows rows{0, 0};
    long long count = 0;
    if (s < num_seqs) {
      rows = sequence_rows(cu, s, n);
      count = sequence_tiles(rows.len, tile_rows);
    }
    long long inclusive = count;
    for (int offset = 1; offset < 32; offset *= 2) {
      const long long y = __shfl_up_sync(0xffffffffu, inclusive, offset);
      if (lane >= offset) inclusive += y;
    }
    const long long first = before + inclusive - count;
    const unsigned hit =
        __ballot_sync(0xffffffffu, count > 0 && tile_index >= first && tile_index < first + count);
    if (hit != 0) {
      const int src = __ffs(hit) - 1;
      const int64_t start = __shfl_sync(0xffffffffu, rows.start, src);
      const int len = __shfl_sync(0xffffffffu, rows.len, src);
      const long long rank = __shfl_sync(0xffffffffu, tile_index - first, src);
      return SeqTile{start, len, sequence_tiles(len, tile_rows) - 1 - static_cast<int>(rank), true,
                     base + src};
    }
    before += __shfl_sync(0xffffffffu, inclusive, 31);
  }
  return SeqTile{0, 0, 0, false, 0};
}

}  // namespace dtrn::cuda

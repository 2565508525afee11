// The fused tensor-core attention backward's dq (attention_tc_backward.cu's dk/dv kernel with
// kFusedDq): the workspace it adds dq through, thread 0's side of the per-tile counters, and the
// block-wide pieces of a step (dS^T to shared memory, dS K added to the sums).
//
// Note [Deterministic dq of the fused backward]
// Query tile i (kQ rows of one query head) receives a piece from every KV tile j of its sequence and KV
// head with j * 128 <= its last row, that is from j = 0, 1, ..., last(i), and they are added in that
// order. One i32 counter per query tile (indexed by the tile's first packed row and its head, in a
// workspace zeroed before the launch) holds how many have been added. At its step for tile i the
// block of KV tile j computes dS first; then thread 0 waits until the counter equals j (every KV tile
// before j reaches i too, its keys being earlier) and the block synchronises. Each lane adds its own
// elements of the piece dS K to the tile's f32 sums with L2 loads and stores (j = 0 stores without
// loading, so the sums need no zeroing; j = last(i) writes scale * sum as bf16 dq instead), the block
// synchronises, and thread 0 stores j + 1 (st.release.gpu); the release is cumulative over the block's
// stores ordered before it by the barrier, and the waiter's acquire with its barrier hands them to its
// block, the pattern of CUDA's cooperative grid sync. The order of every addition is fixed:
// bit-identical runs. Latency: thread 0 reads the counter (relaxed) when the step starts and, finding j
// there after the products, only fences (relaxed read + fence.acq_rel = acquire) instead of polling;
// and it sends j + 1 one step late, after the next step's products, when the block's stores have long
// completed, so that the release's fence does not wait either.
// Step order: every fused block walks its query tiles from the sequence end down to its diagonal, the
// query heads of its group innermost. Blocks j - 1 and j then meet the same (tile, head) at the same
// step index, so each trails the one before by about one step; walking up from the diagonal instead,
// block j would trail block j - 1 by the 128 / kQ tiles between their diagonals, and most blocks of a
// long sequence would spin rather than compute.
// Deadlock freedom: a block waits only for blocks of the same (sequence, KV head) with a lower KV
// tile. Blocks take their work by a ticket (an atomic counter in the workspace) in the order KV tile
// index, then sequence, then KV head (locate_tile_major_in_warp), so every block waited for holds a
// lower ticket, and a lower ticket was taken by a block that is already running or done, whatever order the
// hardware dispatches blocks in. Hence no block waits forever: the lowest-ticket one that did would wait
// for a running block that does not, and that block sends every count it owes (each before its own
// next wait, or at its end). The order also starts the heaviest blocks (the first key tiles of all
// sequences) first: the split kernel's sequence-major order would leave the last sequence's heavy
// blocks to the end of the grid.
#pragma once

#include <cstdint>

#include "cuda/attention_tc.cuh"

namespace dtrn::cuda {

// What the fused kernel adds to the dk/dv kernel's arguments (Note [Deterministic dq of the fused
// backward]); the split dk/dv kernel gets it empty.
struct FusedDq {
  float* sums = nullptr;         // [N, H, D]: the pieces of dS K added so far
  int32_t* counters = nullptr;   // [H, N]: per query tile, at its first row, the KV tiles added so far
  int32_t* ticket = nullptr;     // the next block's work index
  Bf16* dq = nullptr;
};

__device__ __forceinline__ int32_t load_relaxed(const int32_t* p) {
  int32_t v;
  asm volatile("ld.relaxed.gpu.global.b32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ int32_t load_acquire(const int32_t* p) {
  int32_t v;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ void store_release(int32_t* p, int32_t v) {
  asm volatile("st.release.gpu.global.b32 [%0], %1;\n" ::"l"(p), "r"(v) : "memory");
}

// Thread 0's side of the counters (Note [Deterministic dq of the fused backward]). It reads a step's
// counter when the step starts and looks at the value after the step's products, so that a
// predecessor long done costs no wait; and it sends a step's count one step late, when the block's
// additions have long completed, so that the release costs no wait either. The other threads carry
// the struct but never use it.
struct DqCounter {
  int32_t seen = -1;             // the step's counter as read at its start
  int32_t* pending = nullptr;    // the previous step's counter, to be set to pending_value
  int32_t pending_value = 0;

  __device__ void peek(const int32_t* counter) {
    if (threadIdx.x == 0) seen = load_relaxed(counter);
  }

  // The release orders before it every addition of the block to the pending tile: they precede the
  // barrier that ended their step, and the barrier precedes this.
  __device__ void send_pending() {
    if (threadIdx.x == 0 && pending != nullptr) store_release(pending, pending_value);
    pending = nullptr;
  }

  // Returns once `order` additions to the counter's tile are visible to thread 0; the caller's next
  // barrier makes them visible to the block.
  __device__ void wait(const int32_t* counter, int32_t order) {
    if (threadIdx.x != 0) return;
    if (seen == order) {
      asm volatile("fence.acq_rel.gpu;\n" ::: "memory");  // with the relaxed read: an acquire
      return;
    }
    // A wait of 2^26 polls (seconds; a real one lasts at most a kernel's length) means the Note's
    // ordering broke: fail the launch rather than hang.
    for (int polls = 0; load_acquire(counter) != order; ++polls) {
      if (polls == 1 << 26) __trap();
    }
  }
};

// The fused block's work: (key tile index in locate_tile_major_in_warp's order, KV head) from a ticket
// taken in the order blocks start, the KV head fastest (Note [Deterministic dq of the fused backward]).
__device__ inline uint2 take_ticket(int32_t* ticket) {
  __shared__ int32_t s_ticket;
  if (threadIdx.x == 0) s_ticket = atomicAdd(ticket, 1);
  __syncthreads();
  const unsigned t = static_cast<unsigned>(s_ticket);
  return make_uint2(t / gridDim.y, t % gridDim.y);
}

// Stores a warp's dS^T C fragments (kM m tiles of 16 keys from key row `row0`, kQ queries) as bf16 into
// the shared [key][query] tile s_ds.
template <int kM, int kQ, int kStride>
__device__ __forceinline__ void store_ds_transposed(Bf16* s_ds, int row0,
                                                    const float (&ds)[kM][kQ / 8][4]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int mi = 0; mi < kM; ++mi) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      Bf16* row = s_ds + (row0 + mi * 16 + lane / 4 + half * 8) * kStride + (lane % 4) * 2;
#pragma unroll
      for (int nt = 0; nt < kQ / 8; ++nt) {
        *reinterpret_cast<uint32_t*>(row + nt * 8) =
            pack_bf16(ds[mi][nt][2 * half], ds[mi][nt][2 * half + 1]);
      }
    }
  }
}

// One fused step's dq: the piece dS K (kQ queries of query head `head` from packed row `first_row`, the
// block's 128 keys in s_k and dS^T in s_ds, kStride elements per row) added to the query tile's sums
// as addition number `order` (0: the first, which stores; `last`: the final one, which writes
// scale * sum to dq). The caller has waited for the `order` additions before it. kWarps warps; every
// thread of the block calls it.
template <int D, int kQ, int kWarps, int kStride>
__device__ __forceinline__ void add_dq_piece(const Bf16* s_ds, const Bf16* s_k, const FusedDq& fused,
                                             const AttentionShape& shape, int head, int64_t first_row,
                                             int q_rows, int order, bool last) {
  constexpr int kMTiles = kQ / 16, kCols = 32;  // a warp's piece: 16 queries by 32 columns
  static_assert(kWarps == kMTiles * (D / kCols), "the warps tile the kQ x D piece exactly");
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int m0 = (warp % kMTiles) * 16, c0 = (warp / kMTiles) * kCols;
  // This lane's elements: rows m0 + lane / 4 + 8 half, columns c0 + 8 nt + 2 (lane % 4) and the next.
  float* slots[2];
  bool valid[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = m0 + lane / 4 + half * 8;
    valid[half] = row < q_rows;
    slots[half] = fused.sums + ((first_row + row) * shape.h + head) * D + c0 + (lane % 4) * 2;
  }
  // The sums so far, loaded before the product so that the L2 latency overlaps it.
  float2 sum[2][kCols / 8] = {};
  if (order > 0) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      if (!valid[half]) continue;
#pragma unroll
      for (int nt = 0; nt < kCols / 8; ++nt) {
        sum[half][nt] = __ldcg(reinterpret_cast<const float2*>(slots[half] + nt * 8));
      }
    }
  }
  float acc[kCols / 8][4] = {};
#pragma unroll
  for (int ks = 0; ks < kTcBlockRows / 16; ++ks) {
    uint32_t a[4];
    load_a_from_cols<kStride>(a, s_ds, m0, ks * 16);
#pragma unroll
    for (int cp = 0; cp < kCols / 16; ++cp) {
      uint32_t b[4];
      load_b_from_cols<D>(b, s_k, ks * 16, c0 + cp * 16);
      mma_bf16(acc[2 * cp], a, b[0], b[1]);
      mma_bf16(acc[2 * cp + 1], a, b[2], b[3]);
    }
  }
  const float scale = static_cast<float>(shape.scale);
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    if (!valid[half]) continue;
#pragma unroll
    for (int nt = 0; nt < kCols / 8; ++nt) {
      const float x = sum[half][nt].x + acc[nt][2 * half], y = sum[half][nt].y + acc[nt][2 * half + 1];
      if (last) {
        const int64_t offset = slots[half] + nt * 8 - fused.sums;  // dq has the sums' layout
        *reinterpret_cast<uint32_t*>(fused.dq + offset) = pack_bf16(x * scale, y * scale);
      } else {
        __stcg(reinterpret_cast<float2*>(slots[half] + nt * 8), make_float2(x, y));
      }
    }
  }
}

}  // namespace dtrn::cuda

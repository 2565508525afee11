// The shared memory of the wgmma attention forward (attention_wgmma_forward.cu) and its producer
// warpgroup, which fills it: Q slots, a ring of kWgmmaStages K/V stages (all in the swizzled layout
// of Note [wgmma operand layout: 128-byte swizzle]), the work items the producer hands to the
// consumers, and the mbarriers between them (warp_specialization.cuh).
//
// Note [wgmma forward load ring]
// The producer walks the block's work items (Note [wgmma forward schedule]) and each item's key
// tiles; g counts the key tiles over all of the block's items, and tile g (its K, then its V) is
// load g of Note [load ring protocol], whose barriers count the producer's 128 threads (full) and
// both consumer warpgroups' 256 (empty). A consumer uses K(g) and V(g - 1) together (it computes
// S(g) while P(g - 1) V(g - 1) runs) and frees tile g - 1, once O += P V(g - 1) has completed, in
// the step of tile g: it holds at most two stages at once, which the protocol allows. Item i
// (counted over the block) owns Q slot i % kQSlots: before it the producer waits on q_empty's
// phase i / kQSlots - 1 (both consumer warpgroups have read item i - kQSlots and their last S of it
// is done: each of their threads arrives on q_empty then, count 256), writes the item into the slot
// and arrives on item_full (count 128); Q is copied before the item's first key tile, so that tile's
// full barrier covers it (a thread's arrival on it waits for all of its earlier copies). After the
// last item comes one whose head is -1: the consumers stop there. The Q slots keep the protocol's
// phase rule for the same reason as the stages.
#pragma once

#include "cuda/attention_tc.cuh"
#include "cuda/attention_wgmma_schedule.cuh"
#include "cuda/load_ring.cuh"
#include "cuda/warp_specialization.cuh"
#include "cuda/wgmma.cuh"

namespace dtrn::cuda {

constexpr int kWgmmaRows = kTcBlockRows;    // query rows per work item, 64 per consumer warpgroup
constexpr int kWgmmaKv = 128;               // keys per tile: S is m64n128
constexpr int kWgmmaStages = 3;             // K/V stages in the ring
constexpr int kWgmmaConsumerThreads = 256;  // two warpgroups
constexpr int kWgmmaProducerThreads = 128;  // one warpgroup

// One work item as the producer hands it over: the query tile `tile` of the sequence of `len` rows
// that starts at packed row `start`, for head `head`; head -1 ends the block's work.
struct WgmmaWorkItem {
  int64_t start;
  int len;
  int tile;
  int head;
};

template <int D>
struct WgmmaForwardSmem {
  // Two Q slots let the producer load the next item's Q while the consumers still use this one's;
  // at D = 128 the second would not fit beside the ring (227 KiB), so the producer loads it once
  // the consumers' last S of the previous item is done, during that item's last softmax and P V.
  static constexpr int kQSlots = D == 64 ? 2 : 1;
  static constexpr int kQ = kWgmmaRows * D * 2;   // bytes of one Q tile
  static constexpr int kTile = kWgmmaKv * D * 2;  // bytes of one K or V tile
  static constexpr int kStage = 2 * kTile;        // K, then V
  static constexpr int kBarriers = (2 * kWgmmaStages + 2 * kQSlots) * 8;
  static constexpr int kItems = kQSlots * static_cast<int>(sizeof(WgmmaWorkItem));
  // Tiles first (multiples of the 1024-byte swizzle atom), then barriers, items and alignment
  // slack.
  static constexpr int kBytes =
      kQSlots * kQ + kWgmmaStages * kStage + kBarriers + kItems + kSwizzleAtomBytes;
};

// Pointers into one block's shared memory, by key tile g and item i as the Note counts them.
template <int D>
struct WgmmaForwardRing {
  using Smem = WgmmaForwardSmem<D>;
  static constexpr int kQSlots = Smem::kQSlots;
  unsigned char* tiles;  // Q slots, then the stages
  uint64_t* barriers;    // full, empty (kWgmmaStages each), item_full, q_empty (kQSlots each)
  WgmmaWorkItem* items;

  __device__ explicit WgmmaForwardRing(unsigned char* smem_raw)
      : tiles(align_to_swizzle_atom(smem_raw)),
        barriers(
            reinterpret_cast<uint64_t*>(tiles + kQSlots * Smem::kQ + kWgmmaStages * Smem::kStage)),
        items(reinterpret_cast<WgmmaWorkItem*>(barriers + 2 * kWgmmaStages + 2 * kQSlots)) {}

  __device__ unsigned char* k(int g) const {
    return tiles + kQSlots * Smem::kQ + (g % kWgmmaStages) * Smem::kStage;
  }
  __device__ unsigned char* v(int g) const { return k(g) + Smem::kTile; }
  __device__ uint64_t* full_of(int g) const { return barriers + g % kWgmmaStages; }
  __device__ uint64_t* empty_of(int g) const { return barriers + kWgmmaStages + g % kWgmmaStages; }
  __device__ static int phase_of(int g) { return g / kWgmmaStages; }

  __device__ unsigned char* q(int i) const { return tiles + (i % kQSlots) * Smem::kQ; }
  __device__ WgmmaWorkItem* item(int i) const { return items + i % kQSlots; }
  __device__ uint64_t* item_full_of(int i) const {
    return barriers + 2 * kWgmmaStages + i % kQSlots;
  }
  __device__ uint64_t* q_empty_of(int i) const {
    return barriers + 2 * kWgmmaStages + kQSlots + i % kQSlots;
  }
  __device__ static int item_phase_of(int i) { return i / kQSlots; }

  // By one thread, before the block's __syncthreads that precedes every arrival and wait.
  __device__ void init_barriers() const {
    init_load_ring<kWgmmaStages>(full_of(0), empty_of(0), kWgmmaProducerThreads, kWgmmaConsumerThreads);
    for (int s = 0; s < kQSlots; ++s) {
      mbarrier_init(item_full_of(s), kWgmmaProducerThreads);
      mbarrier_init(q_empty_of(s), kWgmmaConsumerThreads);
    }
  }
};

// The kernel's global operands and their shape (attention.h): q [N, H, D], k and v [N, G, D].
struct WgmmaForwardOperands {
  const Bf16* q;
  const Bf16* k;
  const Bf16* v;
  const int32_t* cu;
  AttentionShape shape;
  unsigned tile_blocks;  // attention_tile_blocks(shape, kWgmmaRows): query tiles x of the schedule
};

// The producer warpgroup's loop (Note [wgmma forward load ring]), thread `tid` of
// kWgmmaProducerThreads. Every producer warp locates the items itself: no barrier among them.
template <int D>
__device__ __forceinline__ void produce_work(const WgmmaForwardRing<D>& ring,
                                             const WgmmaForwardOperands& in, int tid) {
  constexpr int kThreads = kWgmmaProducerThreads;
  const AttentionShape& shape = in.shape;
  const long long items = static_cast<long long>(in.tile_blocks) * shape.h;
  const int64_t kv_stride = int64_t{shape.g} * D;
  LoadRingProducer<kWgmmaStages> loads{ring.full_of(0), ring.empty_of(0)};
  for (int i = 0;; ++i) {
    const long long w = wgmma_forward_item(i, blockIdx.x, gridDim.x);
    SeqTile tile{0, 0, 0, false};
    if (w < items)
      tile = locate_tile_in_warp(in.cu, shape.num_seqs, shape.n, kWgmmaRows, w / shape.h);
    const int head = static_cast<int>(w % shape.h);
    if (i >= ring.kQSlots) mbarrier_wait(ring.q_empty_of(i), ring.item_phase_of(i) - 1);
    if (tid == 0)
      *ring.item(i) = WgmmaWorkItem{tile.start, tile.len, tile.tile, tile.found ? head : -1};
    mbarrier_arrive(ring.item_full_of(i));
    if (!tile.found) return;

    const int kv = head / (shape.h / shape.g);
    const int q_lo = tile.tile * kWgmmaRows, q_rows = min(kWgmmaRows, tile.len - q_lo);
    const int kv_end = q_lo + q_rows, num_tiles = (kv_end + kWgmmaKv - 1) / kWgmmaKv;
    const Bf16* k_seq = in.k + (tile.start * shape.g + kv) * D;  // key row 0 of the sequence
    const Bf16* v_seq = in.v + (tile.start * shape.g + kv) * D;
    stage_swizzled<D, kWgmmaRows, kThreads>(ring.q(i),
                                            in.q + ((tile.start + q_lo) * shape.h + head) * D,
                                            int64_t{shape.h} * D, q_rows, tid);
    for (int t = 0; t < num_tiles; ++t) {
      loads.acquire();
      const int64_t first = int64_t{t} * kWgmmaKv;
      const int valid = min(kWgmmaKv, kv_end - t * kWgmmaKv);
      stage_swizzled<D, kWgmmaKv, kThreads>(ring.k(loads.g), k_seq + first * kv_stride, kv_stride,
                                            valid, tid);
      stage_swizzled<D, kWgmmaKv, kThreads>(ring.v(loads.g), v_seq + first * kv_stride, kv_stride,
                                            valid, tid);
      loads.commit();
    }
  }
}

}  // namespace dtrn::cuda

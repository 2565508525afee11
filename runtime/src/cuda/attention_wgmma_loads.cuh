// The shared memory of the wgmma attention forward (attention_wgmma_forward.cu) and its producer
// warpgroup, which fills it: the Q tile and a ring of kWgmmaStages K/V stages in the swizzled layout of
// Note [wgmma operand layout: 128-byte swizzle], and per stage a `full` and an `empty` mbarrier
// (warp_specialization.cuh).
//
// Note [wgmma forward load ring]
// Key tile t (keys 128 t .. 128 t + 127 of the sequence) lives in stage t % kWgmmaStages. The producer
// warpgroup copies it by cp.async, and once its copies have landed each of its threads fences them into
// the async proxy (fence.proxy.async: wgmma reads shared memory through it) and arrives on full[stage]:
// count 128, phase t / kWgmmaStages. A consumer warpgroup waits on that phase before its wgmmas read the tile and,
// once the last of them (O += P V(t)) has completed, each of its threads arrives on empty[stage]: count
// 256, both warpgroups. The producer waits on empty's phase t / kWgmmaStages - 1 before it overwrites
// the stage with tile t. A consumer uses K(t) and V(t - 1) together (it computes S(t) while P(t - 1) V(t
// - 1) runs) and frees tile t - 1 in the iteration of tile t, so it needs at most two stages at once and
// the producer works one tile ahead with three. The producer arrives on full[t - 1] only after it has
// queued tile t (a thread's copy groups complete in order, so it waits for all but its newest): its wait
// for the stage of tile t needs tile t - 3 freed, which needs tile t - 2 full, already arrived, so with
// three stages the two waits never wait on each other. No waiter falls two phases behind: the producer
// refills a stage only after both warpgroups freed it, and a consumer frees a tile only after its full
// phase completed.
#pragma once

#include "cuda/attention_tc.cuh"
#include "cuda/warp_specialization.cuh"
#include "cuda/wgmma.cuh"

namespace dtrn::cuda {

constexpr int kWgmmaRows = kTcBlockRows;  // query rows per block, 64 per consumer warpgroup
constexpr int kWgmmaKv = 128;             // keys per tile: S is m64n128
constexpr int kWgmmaStages = 3;           // K/V stages in the ring
constexpr int kWgmmaConsumerThreads = 256;  // two warpgroups
constexpr int kWgmmaProducerThreads = 128;  // one warpgroup
static_assert(kWgmmaStages >= 3, "Note [wgmma forward load ring]: two stages deadlock");

template <int D>
struct WgmmaForwardSmem {
  static constexpr int kQ = kWgmmaRows * D * 2;  // bytes of the Q tile
  static constexpr int kTile = kWgmmaKv * D * 2;  // bytes of one K or V tile
  static constexpr int kStage = 2 * kTile;        // K, then V
  static constexpr int kBarriers = 2 * kWgmmaStages * 8;
  // Tiles first (multiples of the 1024-byte swizzle atom), then the barriers, then alignment slack.
  static constexpr int kBytes = kQ + kWgmmaStages * kStage + kBarriers + kSwizzleAtomBytes;
};

// Pointers into one block's shared memory.
template <int D>
struct WgmmaForwardRing {
  using Smem = WgmmaForwardSmem<D>;
  unsigned char* q;
  unsigned char* stages;
  uint64_t* full;
  uint64_t* empty;

  __device__ explicit WgmmaForwardRing(unsigned char* smem_raw)
      : q(align_to_swizzle_atom(smem_raw)),
        stages(q + Smem::kQ),
        full(reinterpret_cast<uint64_t*>(stages + kWgmmaStages * Smem::kStage)),
        empty(full + kWgmmaStages) {}

  __device__ unsigned char* k(int t) const { return stages + (t % kWgmmaStages) * Smem::kStage; }
  __device__ unsigned char* v(int t) const { return k(t) + Smem::kTile; }
  __device__ uint64_t* full_of(int t) const { return full + t % kWgmmaStages; }
  __device__ uint64_t* empty_of(int t) const { return empty + t % kWgmmaStages; }
  __device__ static int phase_of(int t) { return t / kWgmmaStages; }

  // By one thread, before the block's __syncthreads that precedes every arrival and wait.
  __device__ void init_barriers() const {
    for (int s = 0; s < kWgmmaStages; ++s) {
      mbarrier_init(full + s, kWgmmaProducerThreads);
      mbarrier_init(empty + s, kWgmmaConsumerThreads);
    }
  }
};

// Where the producer copies from: the block's q_rows query rows (row r at q + r * q_stride) and the
// sequence's keys and values before kv_end (key row r at k + r * kv_stride, likewise v).
struct WgmmaForwardSources {
  const Bf16* q;
  int64_t q_stride;
  int q_rows;
  const Bf16* k;
  const Bf16* v;
  int64_t kv_stride;
  int kv_end;
};

// The producer warpgroup's loop (Note [wgmma forward load ring]), thread `tid` of kWgmmaProducerThreads:
// Q with tile 0, then tiles 0 .. num_tiles - 1.
template <int D>
__device__ __forceinline__ void produce_kv_tiles(const WgmmaForwardRing<D>& ring,
                                                 const WgmmaForwardSources& src, int num_tiles, int tid) {
  constexpr int kThreads = kWgmmaProducerThreads;
  stage_swizzled<D, kWgmmaRows, kThreads>(ring.q, src.q, src.q_stride, src.q_rows, tid);
  for (int t = 0; t < num_tiles; ++t) {
    if (t >= kWgmmaStages) mbarrier_wait(ring.empty_of(t), ring.phase_of(t) - 1);
    const int64_t first = int64_t{t} * kWgmmaKv;
    const int valid = min(kWgmmaKv, src.kv_end - t * kWgmmaKv);
    stage_swizzled<D, kWgmmaKv, kThreads>(ring.k(t), src.k + first * src.kv_stride, src.kv_stride,
                                          valid, tid);
    stage_swizzled<D, kWgmmaKv, kThreads>(ring.v(t), src.v + first * src.kv_stride, src.kv_stride,
                                          valid, tid);
    cp_async_commit();
    if (t > 0) {
      cp_async_wait<1>();  // tile t - 1 (and Q with tile 0) landed; tile t may be in flight
      fence_proxy_async();
      mbarrier_arrive(ring.full_of(t - 1));
    }
  }
  cp_async_wait<0>();
  fence_proxy_async();
  mbarrier_arrive(ring.full_of(num_tiles - 1));
}

}  // namespace dtrn::cuda

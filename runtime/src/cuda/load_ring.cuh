// A ring of shared-memory stages between a producer warpgroup that fills them by cp.async and
// consumer warpgroups whose wgmmas read them (the warp-specialized attention kernels:
// attention_wgmma_loads.cuh for the forward, attention_wgmma_backward.cu), with a full and an empty
// mbarrier per stage (warp_specialization.cuh).
//
// Note [load ring protocol]
// Loads are counted g = 0, 1, ... over the kernel's life; load g lives in stage g % kStages and its
// barriers' phase is g / kStages. The producer, before it copies load g, waits on empty's phase
// g / kStages - 1 (the consumers freed load g - kStages; the first kStages loads wait for nothing);
// it queues load g's copies as one commit group, and only then makes the oldest load it has not yet
// made visible, load g - L (L = kStages - 2, the lag), visible: it waits for all but its newest L
// groups (a thread's groups complete in order, so load g - L has landed and the L after it may
// still be in flight), fences its copies into the async proxy (wgmma reads shared memory through
// it) and arrives on full[g - L]. So L + 1 loads are in flight while the consumers compute. full
// counts the producer's threads, empty the consumers': a consumer thread waits on full's phase
// g / kStages before any read of load g and arrives on empty once its last read of load g is done
// (the wgmma_wait of its last product on it returned; its own shared loads are done in program
// order). A consumer may hold two loads at once (it frees load g - 1 while it computes on load g):
// the producer's wait for load g needs load g - kStages freed, which needs load g - kStages + 1
// full, and the producer arrived on full up to load g - 1 - L = g - kStages + 1 before that wait,
// so the two never wait on each other; a lag of one more would deadlock (two stages with the
// forward's lag of one do). No waiter falls two phases behind (the parity would lie): the producer
// refills a stage only after every consumer freed it, and they free it only after its full phase
// completed. Before the producer waits on anything else the consumers may hold back (or exits), it
// calls flush, which arrives on every full barrier it owes.
#pragma once

#include "cuda/warp_specialization.cuh"
#include "cuda/wgmma.cuh"

namespace dtrn::cuda {

// By one thread, before the block's __syncthreads that precedes every arrival and wait: full[s] counts
// the producer's threads, empty[s] the consumers'.
template <int kStages>
__device__ __forceinline__ void init_load_ring(uint64_t* full, uint64_t* empty, int producer_threads,
                                               int consumer_threads) {
  for (int s = 0; s < kStages; ++s) {
    mbarrier_init(full + s, producer_threads);
    mbarrier_init(empty + s, consumer_threads);
  }
}

// The producer's side of the Note: every producer thread keeps one, with the same loads.
template <int kStages>
struct LoadRingProducer {
  static_assert(kStages >= 3, "Note [load ring protocol]: two stages leave no lag");
  static constexpr int kLag = kStages - 2;
  uint64_t* full;   // kStages barriers of the producer's thread count
  uint64_t* empty;  // kStages barriers of the consumers' thread count
  int g = 0;        // loads queued so far: the next one is load g
  int visible = 0;  // loads whose full barrier this thread has arrived on

  // Before the copies of load g: waits until its stage is free.
  __device__ __forceinline__ void acquire() const {
    if (g >= kStages) mbarrier_wait(empty + g % kStages, g / kStages - 1);
  }

  // After the copies of load g: commits them, counts load g and makes load g - kLag visible.
  __device__ __forceinline__ void commit() {
    cp_async_commit();
    ++g;
    if (g - visible > kLag) {
      cp_async_wait<kLag>();
      fence_proxy_async();
      mbarrier_arrive(full + visible % kStages);
      ++visible;
    }
  }

  // Makes every queued load visible.
  __device__ __forceinline__ void flush() {
    if (visible == g) return;
    cp_async_wait<0>();
    fence_proxy_async();
    for (; visible < g; ++visible) mbarrier_arrive(full + visible % kStages);
  }
};

}  // namespace dtrn::cuda

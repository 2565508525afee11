// A ring of shared-memory stages between a producer warpgroup that fills them by cp.async and
// consumer warpgroups whose wgmmas read them (the warp-specialized attention kernels:
// attention_wgmma_loads.cuh for the forward, attention_wgmma_backward.cu), with a full and an empty
// mbarrier per stage (warp_specialization.cuh).
//
// Note [load ring protocol]
// Loads are counted g = 0, 1, ... over the kernel's life; load g lives in stage g % kStages and its
// barriers' phase is g / kStages. The producer, before it copies load g, waits on empty's phase
// g / kStages - 1 (the consumers freed load g - kStages; the first kStages loads wait for nothing).
// After queueing load g's copies, each producer thread arrives on full[g] through
// mbarrier_arrive_on_copies: the hardware makes that arrival once the thread's copies have landed,
// and the thread goes on to the next load at once. So full[g] completes exactly when load g is in
// shared memory, whatever the producer does next, and every free stage holds a load in flight.
// (The first form of this ring made load g visible only after queueing load g + kStages - 2, by
// waiting for its own cp.async groups: a consumer then waited, every step, for the producer to issue
// a later load, which needed a stage the slower consumer warpgroup had not yet freed; Nsight Compute
// had the consumers spinning on full 12-32 times a step.) full counts the producer's threads, empty
// the consumers'. A consumer calls wait_loaded on full's phase g / kStages before any read of load
// g: the wait acquires the copies, and its proxy fence orders them before the wgmmas that read them
// (cp.async writes through the generic proxy, wgmma reads through the async proxy). It arrives on
// empty once its last read of load g is done (the wgmma_wait of its last product on it returned;
// its own shared loads are done in program order). A consumer may hold two loads at once (it frees
// load g - 1 while it computes on load g); the producer never waits on full, so nothing waits in a
// cycle with two stages or more (with two, the producer queues load g + 1 only once both consumers
// have freed load g - 1, in step g: no load is in flight while a step ends; the kernels use three or
// four for that overlap). No waiter falls two phases behind (the parity would lie): the producer
// refills a stage only after every consumer freed it, and they free it only after its full phase
// completed. dev/cuda/wgmma_backward_protocol_emulate.py and wgmma_forward_protocol_emulate.py check
// the protocol on the host.
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
  static_assert(kStages >= 2, "Note [load ring protocol]: a consumer holds two stages at once");
  uint64_t* full;   // kStages barriers of the producer's thread count
  uint64_t* empty;  // kStages barriers of the consumers' thread count
  int g = 0;        // loads queued so far: the next one is load g

  // Before the copies of load g: waits until its stage is free.
  __device__ __forceinline__ void acquire() const {
    if (g >= kStages) mbarrier_wait(empty + g % kStages, g / kStages - 1);
  }

  // After the copies of load g: full[g] completes once they have landed.
  __device__ __forceinline__ void commit() {
    mbarrier_arrive_on_copies(full + g % kStages);
    ++g;
  }
};

// The consumers' side: returns once the load whose full barrier is `full` (its phase `phase`) has
// landed, ordered before the wgmmas that read it.
__device__ __forceinline__ void wait_loaded(uint64_t* full, int phase) {
  mbarrier_wait(full, phase);
  fence_proxy_async();
}

}  // namespace dtrn::cuda

// A ring of shared-memory stages between a producer warpgroup that fills them by cp.async and
// consumer warpgroups whose wgmmas read them (the warp-specialized attention kernels:
// attention_wgmma_loads.cuh for the forward, attention_wgmma_backward.cu), with a full and an empty
// mbarrier per stage (warp_specialization.cuh).
//
// Note [load ring protocol]
// Loads are counted g = 0, 1, ... over the kernel's life; load g lives in stage g % kStages and its
// barriers' phase is g / kStages. The producer, before it copies load g, waits on empty's phase
// g / kStages - 1 (the consumers freed load g - kStages; the first kStages loads wait for nothing);
// it queues load g's copies as one commit group, and only then makes load g - 1 visible: it waits
// for all but its newest group (a thread's groups complete in order, so load g - 1 has landed and
// load g may still be in flight), fences its copies into the async proxy (wgmma reads shared memory
// through it) and arrives on full[g - 1]. So two loads are in flight while the consumers compute.
// full counts the producer's threads, empty the consumers': a consumer thread waits on full's phase
// g / kStages before any read of load g and arrives on empty once its last read of load g is done
// (the wgmma_wait of its last product on it returned; its own shared loads are done in program
// order). A consumer that holds at most two loads at once (it frees load g - 1 while it computes on
// load g) needs kStages >= 3 for the two waits never to wait on each other: the producer's wait for
// load g needs load g - 3 freed, which needs load g - 2 full, and that arrival came before the
// wait. No waiter falls two phases behind (the parity would lie): the producer refills a stage only
// after every consumer freed it, and they free it only after its full phase completed. Before the
// producer waits on anything else the consumers may hold back (or exits), it calls flush, which
// arrives on the last full barrier it owes.
#pragma once

#include "cuda/warp_specialization.cuh"
#include "cuda/wgmma.cuh"

namespace dtrn::cuda {

// The producer's side of the Note: every producer thread keeps one, with the same loads.
template <int kStages>
struct LoadRingProducer {
  static_assert(kStages >= 3, "Note [load ring protocol]: two stages deadlock");
  uint64_t* full;   // kStages barriers of the producer's thread count
  uint64_t* empty;  // kStages barriers of the consumers' thread count
  int g = 0;              // loads queued so far: the next one is load g
  bool pending = false;   // whether load g - 1 is queued but full[g - 1] not yet arrived on

  __device__ int stage() const { return g % kStages; }

  // Before the copies of load g: waits until its stage is free.
  __device__ __forceinline__ void acquire() const {
    if (g >= kStages) mbarrier_wait(empty + g % kStages, g / kStages - 1);
  }

  // After the copies of load g: commits them, makes load g - 1 visible and counts load g.
  __device__ __forceinline__ void commit() {
    cp_async_commit();
    if (pending) {
      cp_async_wait<1>();
      fence_proxy_async();
      mbarrier_arrive(full + (g - 1) % kStages);
    }
    pending = true;
    ++g;
  }

  // Makes the newest load visible, if it is not yet.
  __device__ __forceinline__ void flush() {
    if (!pending) return;
    cp_async_wait<0>();
    fence_proxy_async();
    mbarrier_arrive(full + (g - 1) % kStages);
    pending = false;
  }
};

}  // namespace dtrn::cuda

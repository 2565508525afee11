// The pieces of warp-specialized kernels, where producer and consumer warpgroups run different
// loops and a block-wide __syncthreads would tie them together: shared-memory mbarriers (PTX
// `mbarrier`) that count arrivals and flip a phase bit, named hardware barriers (`bar.sync` /
// `bar.arrive` with an id and a thread count) over a subset of the block's warps, and the register
// budget moves between warpgroups (`setmaxnreg`, sm_90a only: callers compile it only under
// __CUDA_ARCH_FEAT_SM90_ALL).
//
// An mbarrier initialised with count c completes its current phase when c arrivals have been made,
// then starts the next one with the count reset. Phase k (k = 0, 1, ...) has parity k % 2; a waiter
// names the parity of the phase it waits for, so it must never fall two phases behind (the
// pipelines using these guarantee that by construction and say why). Arrive has release and the
// wait acquire semantics at CTA scope: what a thread wrote before its arrival is visible to a
// thread whose wait returned.
#pragma once

#include <cstdint>

#include "cuda/attention_mma.cuh"

namespace dtrn::cuda {

// One thread initialises; the block synchronises (__syncthreads) before any thread arrives or
// waits.
__device__ __forceinline__ void mbarrier_init(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(shared_address(bar)), "r"(count)
               : "memory");
}

__device__ __forceinline__ void mbarrier_arrive(uint64_t* bar) {
  asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(
                   shared_address(bar))
               : "memory");
}

// An arrival that the hardware makes once every cp.async this thread issued before it has landed
// (the thread goes on at once; the barrier's count includes this arrival, hence noinc).
__device__ __forceinline__ void mbarrier_arrive_on_copies(uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(shared_address(bar))
               : "memory");
}

// Returns once the phase of parity `phase % 2` has completed.
__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, int phase) {
  const uint32_t address = shared_address(bar);
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, "
        "0, p;\n}\n"
        : "=r"(done)
        : "r"(address), "r"(phase & 1)
        : "memory");
  } while (done == 0);
}

// Named barrier `id` (1 .. 15; 0 is __syncthreads's) over `threads` threads, a multiple of 32: sync
// waits until that many have arrived or synced, counting its own warp; arrive counts its warp and
// goes on.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Registers per thread are allotted per warpgroup at launch (the same count for every warpgroup:
// ptxas sizes a block's threads in whole warpgroups); a warpgroup that needs few hands registers
// back to the block's pool with release_registers and one that needs many takes them with
// claim_registers, which waits until the pool holds them. kCount: 24 .. 256, a multiple of 8. Every
// thread of the warpgroup calls it, with the same count; ptxas allocates the code after the call
// within that count.
template <int kCount>
__device__ __forceinline__ void release_registers() {
  static_assert(kCount >= 24 && kCount <= 256 && kCount % 8 == 0, "setmaxnreg's range");
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kCount));
}

template <int kCount>
__device__ __forceinline__ void claim_registers() {
  static_assert(kCount >= 24 && kCount <= 256 && kCount % 8 == 0, "setmaxnreg's range");
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kCount));
}

}  // namespace dtrn::cuda

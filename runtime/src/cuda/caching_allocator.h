// CudaCachingAllocator: device memory for Storage, from each device's stream-ordered memory pool
// (cudaMallocFromPoolAsync / cudaFreeAsync on the device's one stream).
//
// Note [Why a stream-ordered pool]
// cudaMalloc and cudaFree are slow (cudaFree also synchronises the device), and a training step frees and
// re-requests memory every iteration. A cache of exact-size blocks serves a dense model well, but a D
// block's tensors change size with the routed count every micro-batch: blocks of old sizes pile up while
// new sizes still miss, and the cache grows and calls cudaMalloc every step. The driver's pool
// suballocates and coalesces freed memory for any size, with no synchronisation, and keeps what it has
// reserved (release threshold: unlimited), so a training step reserves nothing new once warm and given
// headroom (below).
//
// - Requests are rounded up to 512 bytes (round_size).
// - Reuse is safe without events because all dtrn work on a device runs on its one stream (Note [One
//   stream per device] in cuda_context.h) and frees are ordered on that stream.
// - Note [Headroom]: the pool grows by exactly what a request lacks, so a working set that is a few MB
//   larger in a later step (a D block routing more tokens than ever before), or a large block (the
//   logits) that finds the free memory cut into smaller pieces than before, would reserve again then.
//   reserve_headroom, called once after the first step (reserve_device_memory_headroom in device.h),
//   leaves a free piece that such growth comes out of.
// - Out of memory: the pool's unused reservations are returned to the driver (after a synchronisation)
//   and the request retried once; then dtrn::Error with the bytes requested, in use and cached.
//
// Device choice: the Allocator interface carries no device, so memory comes from the calling thread's
// current CUDA device; deallocate finds the block's device itself. Thread-safe (one mutex).
//
// This header needs no CUDA headers, so tests and benchmarks may read the statistics.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "dtrn/runtime/allocator.h"

namespace dtrn::cuda {

struct AllocatorStats {
  size_t allocated_bytes = 0;       // in blocks handed out (rounded sizes)
  size_t cached_bytes = 0;          // reserved by the pool and not handed out
  size_t peak_allocated_bytes = 0;  // max of allocated_bytes since start or reset_peak()
  uint64_t allocations = 0;         // allocate() calls that returned memory
  uint64_t cache_hits = 0;          // of those, served from memory the pool had reserved
  uint64_t device_mallocs = 0;      // of those, the ones that made the pool reserve more from the driver
  size_t grown_bytes = 0;           // what those made the pool reserve, in all
  size_t largest_growing_request = 0;  // the largest block whose allocation made the pool grow
  size_t largest_block = 0;         // the largest block handed out so far
};

class CudaCachingAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr, size_t nbytes) override;

  // Statistics of one device (all devices summed when device < 0).
  AllocatorStats stats(int device = -1) const;
  void reset_peak();
  // Returns every device's unused reservations to the driver (after synchronising each device).
  void empty_cache();
  // Makes the device's pool hold at least `bytes` unused in one piece: a block of that size allocated
  // and freed at once (the pool keeps what it reserved). Counts as a device malloc when the pool grew;
  // does nothing when the device has not that much free (Note [Headroom]).
  void reserve_headroom(int device, size_t bytes);

  // The size class a request of `nbytes` is served from.
  static size_t round_size(size_t nbytes);

 private:
  struct Block {
    int device;
    size_t size;
  };
  struct DevicePool {
    void* pool = nullptr;  // the device's cudaMemPool_t
    AllocatorStats stats;
  };

  DevicePool& pool(int device);  // with mutex_ held
  size_t reserved(const DevicePool& p) const;
  void* malloc_or_throw(int device, size_t size, size_t requested);  // with mutex_ held

  mutable std::mutex mutex_;
  std::vector<DevicePool> pools_;                  // by device index
  std::unordered_map<void*, Block> live_blocks_;  // handed out, by pointer
};

// The process-wide instance (never destroyed: see cuda_context.h).
CudaCachingAllocator& caching_allocator();

}  // namespace dtrn::cuda

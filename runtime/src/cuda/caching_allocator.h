// CudaCachingAllocator: device memory for Storage. cudaMalloc and cudaFree are slow (cudaFree also
// synchronises the device), and a training step frees and re-requests the same sizes every iteration, so
// freed blocks are kept in per-device free lists and handed out again.
//
// - Sizes are rounded up to a size class: multiples of 512 bytes up to 1 MiB, then eight classes per
//   power of two (each at most 12.5% above the request), so that similar requests share blocks.
// - A request takes the smallest cached block of its device that is at least its class and at most 25%
//   larger (best fit in a std::multimap by size; among equal sizes the most recently freed); blocks are
//   never split or merged.
// - On a miss it calls cudaMalloc on the calling thread's current device. When that runs out of memory it
//   releases every cached block of that device and retries once, then throws dtrn::Error with the bytes
//   requested, in use and cached.
// - Reuse without events is safe because all dtrn work on a device runs on its one stream (Note [One
//   stream per device] in cuda_context.h): a block freed on the host is only rewritten by work queued
//   after everything that read it.
//
// Device choice: the Allocator interface carries no device, so memory comes from the calling thread's
// current CUDA device; deallocate finds the block's device itself. Thread-safe (one mutex).
//
// This header needs no CUDA headers, so tests and benchmarks may read the statistics.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "dtrn/runtime/allocator.h"

namespace dtrn::cuda {

struct AllocatorStats {
  size_t allocated_bytes = 0;       // in blocks handed out (rounded sizes)
  size_t cached_bytes = 0;          // in free blocks kept for reuse
  size_t peak_allocated_bytes = 0;  // max of allocated_bytes since start or reset_peak()
  uint64_t allocations = 0;         // allocate() calls that returned memory
  uint64_t cache_hits = 0;          // of those, served from the cache
  uint64_t device_mallocs = 0;      // cudaMalloc calls that succeeded
};

class CudaCachingAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr, size_t nbytes) override;

  // Statistics of one device (all devices summed when device < 0).
  AllocatorStats stats(int device = -1) const;
  void reset_peak();
  // Returns every cached block of every device to the driver (after synchronising each device).
  void empty_cache();

  // The size class a request of `nbytes` is served from.
  static size_t round_size(size_t nbytes);

 private:
  struct Block {
    int device;
    size_t size;
  };
  struct DevicePool {
    std::multimap<size_t, void*> free_blocks;  // size -> block
    AllocatorStats stats;
  };

  DevicePool& pool(int device);
  void release_cached(int device);  // with mutex_ held
  void* malloc_or_throw(int device, size_t size, size_t requested);

  mutable std::mutex mutex_;
  std::vector<DevicePool> pools_;                  // by device index
  std::unordered_map<void*, Block> live_blocks_;  // handed out, by pointer
};

// The process-wide instance (never destroyed: see cuda_context.h).
CudaCachingAllocator& caching_allocator();

}  // namespace dtrn::cuda

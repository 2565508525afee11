// Allocator: where Storage gets its bytes. The CPU allocator hands out 64-byte aligned host memory; the
// CUDA backend registers a caching allocator for device memory. Allocators are process-wide singletons,
// thread-safe, and outlive every Storage they served.
#pragma once

#include <cstddef>

#include "dtrn/runtime/device.h"

namespace dtrn {

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* ptr, size_t nbytes) = 0;
};

// The allocator for a device. Throws dtrn::Error when that device's backend is not built or no such GPU.
Allocator& allocator_for(Device device);

// Page-locked host memory where a GPU is present (device-to-host copies into it run at full DMA speed and
// need no staging), else the CPU allocator. It keeps freed blocks for reuse by a request of the same size
// and never returns them to the system: it serves buffers that come back in the same sizes (checkpoint
// snapshots), which would otherwise pay the slow page-locking of every allocation each time.
Allocator& pinned_host_allocator();

}  // namespace dtrn

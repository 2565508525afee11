// Storage: one contiguous block of bytes on one device, shared by every Tensor that views it. Freed through
// its allocator when the last view goes away. Not thread-safe for concurrent writes (nothing in dtrn does
// that); the reference count is.
#pragma once

#include <cstddef>
#include <memory>

#include "dtrn/runtime/allocator.h"
#include "dtrn/runtime/device.h"

namespace dtrn {

class Storage {
 public:
  Storage(size_t nbytes, Device device);
  // Bytes from `allocator` (which must serve `device`'s memory), e.g. pinned_host_allocator() for the host.
  Storage(size_t nbytes, Device device, Allocator& allocator);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  Allocator* allocator_ = nullptr;
};

}  // namespace dtrn

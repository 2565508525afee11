// Page-locked host memory (allocator.h's pinned_host_allocator): cudaMallocHost, with freed blocks kept
// by size and handed to the next request of that size. Page-locking costs about as much as the copy it
// speeds up (hundreds of microseconds per megabyte), so a buffer that comes back every checkpoint must not
// pay it again; the blocks are never returned to the system.
#include <cstddef>
#include <map>
#include <mutex>
#include <vector>

#include "cuda/cuda_backend.h"
#include "cuda/cuda_check.h"

namespace dtrn {
namespace {

class PinnedHostAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(nbytes);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        return p;
      }
    }
    void* p = nullptr;
    CUDA_CHECK(cudaMallocHost(&p, nbytes));
    return p;
  }
  void deallocate(void* ptr, size_t nbytes) override {
    std::lock_guard<std::mutex> lock(mutex_);
    free_[nbytes].push_back(ptr);
  }

 private:
  std::mutex mutex_;
  std::map<size_t, std::vector<void*>> free_;
};

}  // namespace

Allocator* CudaBackend::pinned_host_allocator() {
  static PinnedHostAllocator* allocator = new PinnedHostAllocator();  // leaked: see cuda_context.h
  return allocator;
}

}  // namespace dtrn

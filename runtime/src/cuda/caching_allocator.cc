#include "cuda/caching_allocator.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <bit>

#include "cuda/cuda_check.h"
#include "cuda/cuda_context.h"
#include "dtrn/runtime/check.h"

namespace dtrn::cuda {
namespace {

constexpr size_t kGranularity = 512;            // cudaMalloc returns at least 256-aligned; keep 512 steps
constexpr size_t kSmallLimit = size_t{1} << 20;  // up to here: 512-byte steps
constexpr int kClassesPerPowerOfTwo = 8;        // above: 12.5% steps
constexpr size_t kMaxReuseSlackDivisor = 4;     // reuse a block at most 25% larger than the class

double mib(size_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

}  // namespace

size_t CudaCachingAllocator::round_size(size_t nbytes) {
  size_t size = (nbytes + kGranularity - 1) / kGranularity * kGranularity;
  if (size <= kSmallLimit) return size;
  // Steps of 2^(floor(log2(size)) - 3): eight classes between consecutive powers of two.
  size_t step = std::bit_floor(size) / kClassesPerPowerOfTwo;
  return (size + step - 1) / step * step;
}

CudaCachingAllocator::DevicePool& CudaCachingAllocator::pool(int device) {
  if (pools_.empty()) pools_.resize(device_count());
  DTRN_ASSERT(device >= 0 && device < static_cast<int>(pools_.size()), "device ", device);
  return pools_[device];
}

void* CudaCachingAllocator::allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  const int device = current_device();
  const size_t size = round_size(nbytes);
  std::lock_guard<std::mutex> lock(mutex_);
  DevicePool& p = pool(device);

  void* ptr = nullptr;
  size_t block_size = size;
  auto it = p.free_blocks.lower_bound(size);
  if (it != p.free_blocks.end() && it->first <= size + size / kMaxReuseSlackDivisor) {
    block_size = it->first;
    ptr = it->second;
    p.free_blocks.erase(it);
    p.stats.cached_bytes -= block_size;
    ++p.stats.cache_hits;
  } else {
    ptr = malloc_or_throw(device, size, nbytes);
  }

  live_blocks_.emplace(ptr, Block{device, block_size});
  p.stats.allocated_bytes += block_size;
  p.stats.peak_allocated_bytes = std::max(p.stats.peak_allocated_bytes, p.stats.allocated_bytes);
  ++p.stats.allocations;
  return ptr;
}

void* CudaCachingAllocator::malloc_or_throw(int device, size_t size, size_t requested) {
  DeviceGuard guard(device);
  void* ptr = nullptr;
  cudaError_t err = cudaMalloc(&ptr, size);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear the (non-sticky) OOM before retrying
    release_cached(device);
    err = cudaMalloc(&ptr, size);
  }
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    const AllocatorStats& s = pool(device).stats;
    DTRN_CHECK(false, "CUDA out of memory on cuda:", device, ": tried to allocate ", requested,
               " bytes (", mib(size), " MiB as a block); dtrn holds ", mib(s.allocated_bytes),
               " MiB in use and ", mib(s.cached_bytes), " MiB cached; the device has ",
               mib(free_bytes), " MiB free of ", mib(total_bytes), " MiB");
  }
  CUDA_CHECK(err);
  ++pool(device).stats.device_mallocs;
  return ptr;
}

void CudaCachingAllocator::deallocate(void* ptr, size_t /*nbytes: the block knows its size*/) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = live_blocks_.find(ptr);
  DTRN_ASSERT(it != live_blocks_.end(), "CudaCachingAllocator: freeing ", ptr,
              " which it did not hand out");
  const Block block = it->second;
  live_blocks_.erase(it);
  DevicePool& p = pool(block.device);
  p.stats.allocated_bytes -= block.size;
  p.stats.cached_bytes += block.size;
  // At the front of its size's range, so the next request of that size takes it (LIFO): the most
  // recently freed block is the likeliest to still sit in L2.
  p.free_blocks.emplace_hint(p.free_blocks.lower_bound(block.size), block.size, ptr);
}

void CudaCachingAllocator::release_cached(int device) {
  DevicePool& p = pool(device);
  if (p.free_blocks.empty()) return;
  DeviceGuard guard(device);
  // Queued kernels may still read a cached block (see the header): wait for them before the driver
  // may hand its pages to someone else.
  CUDA_CHECK(cudaDeviceSynchronize());
  for (auto& [size, ptr] : p.free_blocks) CUDA_CHECK(cudaFree(ptr));
  p.free_blocks.clear();
  p.stats.cached_bytes = 0;
}

AllocatorStats CudaCachingAllocator::stats(int device) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (device >= 0) {
    return device < static_cast<int>(pools_.size()) ? pools_[device].stats : AllocatorStats{};
  }
  AllocatorStats sum;
  for (const DevicePool& p : pools_) {
    sum.allocated_bytes += p.stats.allocated_bytes;
    sum.cached_bytes += p.stats.cached_bytes;
    sum.peak_allocated_bytes += p.stats.peak_allocated_bytes;
    sum.allocations += p.stats.allocations;
    sum.cache_hits += p.stats.cache_hits;
    sum.device_mallocs += p.stats.device_mallocs;
  }
  return sum;
}

void CudaCachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (DevicePool& p : pools_) p.stats.peak_allocated_bytes = p.stats.allocated_bytes;
}

void CudaCachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (int device = 0; device < static_cast<int>(pools_.size()); ++device) release_cached(device);
}

CudaCachingAllocator& caching_allocator() {
  static CudaCachingAllocator* instance = new CudaCachingAllocator();
  return *instance;
}

}  // namespace dtrn::cuda

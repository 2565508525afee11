#include "cuda/caching_allocator.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>

#include "cuda/cuda_check.h"
#include "cuda/cuda_context.h"
#include "dtrn/runtime/check.h"

namespace dtrn::cuda {
namespace {

constexpr size_t kGranularity = 512;

double mib(size_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

}  // namespace

size_t CudaCachingAllocator::round_size(size_t nbytes) {
  return (nbytes + kGranularity - 1) / kGranularity * kGranularity;
}

CudaCachingAllocator::DevicePool& CudaCachingAllocator::pool(int device) {
  if (pools_.empty()) pools_.resize(device_count());
  DTRN_ASSERT(device >= 0 && device < static_cast<int>(pools_.size()), "device ", device);
  DevicePool& p = pools_[device];
  if (p.pool == nullptr) {
    cudaMemPool_t pool = nullptr;
    CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t keep_everything = UINT64_MAX;
    CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep_everything));
    p.pool = pool;
  }
  return p;
}

size_t CudaCachingAllocator::reserved(const DevicePool& p) const {
  uint64_t bytes = 0;
  CUDA_CHECK(cudaMemPoolGetAttribute(static_cast<cudaMemPool_t>(p.pool), cudaMemPoolAttrReservedMemCurrent,
                                     &bytes));
  return static_cast<size_t>(bytes);
}

void* CudaCachingAllocator::allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  const int device = current_device();
  const size_t size = round_size(nbytes);
  std::lock_guard<std::mutex> lock(mutex_);
  DevicePool& p = pool(device);
  const size_t before = reserved(p);
  void* ptr = malloc_or_throw(device, size, nbytes);
  const size_t after = reserved(p);
  if (after > before) {
    ++p.stats.device_mallocs;
    p.stats.grown_bytes += after - before;
    p.stats.largest_growing_request = std::max(p.stats.largest_growing_request, size);
  } else {
    ++p.stats.cache_hits;
  }
  live_blocks_.emplace(ptr, Block{device, size});
  p.stats.allocated_bytes += size;
  p.stats.peak_allocated_bytes = std::max(p.stats.peak_allocated_bytes, p.stats.allocated_bytes);
  p.stats.largest_block = std::max(p.stats.largest_block, size);
  ++p.stats.allocations;
  return ptr;
}

void* CudaCachingAllocator::malloc_or_throw(int device, size_t size, size_t requested) {
  DeviceGuard guard(device);
  DevicePool& p = pool(device);
  cudaStream_t stream = stream_for(device);
  auto pool = static_cast<cudaMemPool_t>(p.pool);
  void* ptr = nullptr;
  cudaError_t err = cudaMallocFromPoolAsync(&ptr, size, pool, stream);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear the (non-sticky) OOM before retrying
    // Queued kernels may still use freed memory: wait for them before the pool returns it.
    CUDA_CHECK(cudaStreamSynchronize(stream));
    CUDA_CHECK(cudaMemPoolTrimTo(pool, 0));
    err = cudaMallocFromPoolAsync(&ptr, size, pool, stream);
  }
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    const size_t held = reserved(p);
    DTRN_CHECK(false, "CUDA out of memory on cuda:", device, ": tried to allocate ", requested,
               " bytes (", mib(size), " MiB as a block); dtrn holds ", mib(p.stats.allocated_bytes),
               " MiB in use and ", mib(held > p.stats.allocated_bytes ? held - p.stats.allocated_bytes : 0),
               " MiB cached; the device has ", mib(free_bytes), " MiB free of ", mib(total_bytes), " MiB");
  }
  CUDA_CHECK(err);
  return ptr;
}

void CudaCachingAllocator::deallocate(void* ptr, size_t /*nbytes: the block knows its size*/) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = live_blocks_.find(ptr);
  DTRN_ASSERT(it != live_blocks_.end(), "CudaCachingAllocator: freeing ", ptr, " which it did not hand out");
  const Block block = it->second;
  live_blocks_.erase(it);
  pool(block.device).stats.allocated_bytes -= block.size;
  DeviceGuard guard(block.device);
  CUDA_CHECK(cudaFreeAsync(ptr, stream_for(block.device)));
}

void CudaCachingAllocator::reserve_headroom(int device, size_t bytes) {
  if (bytes == 0) return;
  std::lock_guard<std::mutex> lock(mutex_);
  DevicePool& p = pool(device);
  DeviceGuard guard(device);
  cudaStream_t stream = stream_for(device);
  const size_t before = reserved(p);
  void* ptr = nullptr;
  const cudaError_t err =
      cudaMallocFromPoolAsync(&ptr, round_size(bytes), static_cast<cudaMemPool_t>(p.pool), stream);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // not there: training goes on without headroom
    return;
  }
  CUDA_CHECK(err);
  CUDA_CHECK(cudaFreeAsync(ptr, stream));
  if (reserved(p) > before) ++p.stats.device_mallocs;
}

AllocatorStats CudaCachingAllocator::stats(int device) const {
  std::lock_guard<std::mutex> lock(mutex_);
  AllocatorStats sum;
  for (int d = 0; d < static_cast<int>(pools_.size()); ++d) {
    if (device >= 0 && d != device) continue;
    const DevicePool& p = pools_[d];
    AllocatorStats s = p.stats;
    if (p.pool != nullptr) {
      const size_t held = reserved(p);
      s.cached_bytes = held > s.allocated_bytes ? held - s.allocated_bytes : 0;
    }
    sum.allocated_bytes += s.allocated_bytes;
    sum.cached_bytes += s.cached_bytes;
    sum.peak_allocated_bytes += s.peak_allocated_bytes;
    sum.allocations += s.allocations;
    sum.cache_hits += s.cache_hits;
    sum.device_mallocs += s.device_mallocs;
    sum.grown_bytes += s.grown_bytes;
    sum.largest_growing_request = std::max(sum.largest_growing_request, s.largest_growing_request);
    sum.largest_block = std::max(sum.largest_block, s.largest_block);
  }
  return sum;
}

void CudaCachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (DevicePool& p : pools_) p.stats.peak_allocated_bytes = p.stats.allocated_bytes;
}

void CudaCachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (int device = 0; device < static_cast<int>(pools_.size()); ++device) {
    if (pools_[device].pool == nullptr) continue;
    DeviceGuard guard(device);
    CUDA_CHECK(cudaStreamSynchronize(stream_for(device)));
    CUDA_CHECK(cudaMemPoolTrimTo(static_cast<cudaMemPool_t>(pools_[device].pool), 0));
  }
}

CudaCachingAllocator& caching_allocator() {
  static CudaCachingAllocator* instance = new CudaCachingAllocator();
  return *instance;
}

}  // namespace dtrn::cuda

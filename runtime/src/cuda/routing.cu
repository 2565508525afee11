// Token routing on the device (backend.h route_*; the CPU specification is cpu/routing.cc).
//
// Compaction is one block: each thread takes a contiguous run of the mask, counts its routed tokens,
// a block-wide exclusive scan gives every run its output offsets, and the runs are written in order
// (up to 32768 tokens the runs are read from a copy of the mask in shared memory).
// N is B*T (tens of thousands), so one block is a few microseconds and needs no inter-block scan.
#include <cub/block/block_scan.cuh>
#include <cub/device/device_radix_sort.cuh>

#include "cuda/cuda_check.h"
#include "cuda/device_types.cuh"
#include "cuda/train_kernels.h"
#include "rng_philox.h"

namespace dtrn::cuda {
namespace {

constexpr int kCompactThreads = 1024;
constexpr size_t kScratchAlign = 256;

size_t align_up(size_t bytes) { return (bytes + kScratchAlign - 1) / kScratchAlign * kScratchAlign; }

// CUB's temporary storage for n (f32 key, i32 index) pairs; it follows the unsorted indices in the
// scratch buffer.
size_t sort_temp_bytes(int64_t n) {
  size_t bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const float*>(nullptr),
                                             static_cast<float*>(nullptr), static_cast<const int32_t*>(nullptr),
                                             static_cast<int32_t*>(nullptr), static_cast<int>(n)));
  return bytes;
}

__global__ void threshold_kernel(const float* p, int64_t n, float threshold, int32_t* mask) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    mask[i] = p[i] > threshold ? 1 : 0;
  }
}

__global__ void iota_kernel(int32_t* order, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    order[i] = static_cast<int32_t>(i);
  }
}

// The partial Fisher-Yates shuffle is sequential by nature; it runs only when a layer routed nothing.
__global__ void fallback_kernel(int32_t* mask, int32_t* order, int64_t n, int64_t want, uint64_t seed,
                                uint64_t stream, uint64_t offset) {
  for (int64_t i = 0; i < want; ++i) {
    const int64_t j = i + static_cast<int64_t>(philox_below(seed, stream, offset + 2 * i, n - i));
    const int32_t t = order[i];
    order[i] = order[j];
    order[j] = t;
    mask[order[i]] = 1;
  }
}

// Up to this many tokens the mask is first copied into shared memory (a byte a token) with coalesced
// loads, and each thread reads its run from there: reading the runs straight from global memory makes
// every warp load touch 32 different lines, 16 times in a row (21 us at 16384 tokens on an H200).
constexpr int64_t kStagedMaskTokens = 32768;

template <bool kStaged>
__global__ void __launch_bounds__(kCompactThreads) compact_kernel(const int32_t* mask, int64_t rows,
                                                                  int64_t cols, int32_t* routed,
                                                                  int32_t* positions, int32_t* bypass,
                                                                  int32_t* cu_seqlens, int32_t* count) {
  using Scan = cub::BlockScan<int32_t, kCompactThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  __shared__ uint8_t staged[kStaged ? kStagedMaskTokens : 1];
  const int64_t n = rows * cols;
  if constexpr (kStaged) {
#pragma unroll 8
    for (int64_t i = threadIdx.x; i < n; i += kCompactThreads) staged[i] = mask[i] != 0;
    __syncthreads();
  }
  auto routed_at = [&](int64_t i) -> int32_t {
    if constexpr (kStaged) {
      return staged[i];
    } else {
      return mask[i] != 0;
    }
  };
  const int64_t per_thread = (n + kCompactThreads - 1) / kCompactThreads;
  const int64_t begin = min(n, threadIdx.x * per_thread), end = min(n, begin + per_thread);
  int32_t mine = 0;
  for (int64_t i = begin; i < end; ++i) mine += routed_at(i);
  int32_t before = 0, total = 0;
  Scan(scan_storage).ExclusiveSum(mine, before, total);
  int32_t r = before;
  int32_t b = static_cast<int32_t>(begin) - before;  // bypassed tokens before this run
  for (int64_t i = begin; i < end; ++i) {
    const int64_t row = i / cols, col = i - row * cols;
    if (col == 0) cu_seqlens[row] = r;
    if (routed_at(i)) {
      routed[r] = static_cast<int32_t>(i);
      positions[r] = static_cast<int32_t>(col);
      ++r;
    } else {
      bypass[b++] = static_cast<int32_t>(i);
    }
  }
  if (threadIdx.x == 0) {
    cu_seqlens[rows] = total;
    count[0] = total;
  }
}

}  // namespace

void launch_route_threshold(const float* p, int64_t n, float threshold, int32_t* mask, cudaStream_t stream) {
  if (n == 0) return;
  threshold_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(p, n, threshold, mask);
  CUDA_CHECK_LAUNCH();
}

void launch_route_fallback(int32_t* mask, int32_t* order, int64_t n, int64_t want, uint64_t seed,
                           uint64_t rng_stream, uint64_t offset, cudaStream_t stream) {
  if (n == 0 || want == 0) return;
  iota_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(order, n);
  CUDA_CHECK_LAUNCH();
  fallback_kernel<<<1, 1, 0, stream>>>(mask, order, n, want, seed, rng_stream, offset);
  CUDA_CHECK_LAUNCH();
}

void launch_route_compact(const int32_t* mask, int64_t rows, int64_t cols, int32_t* routed,
                          int32_t* positions, int32_t* bypass, int32_t* cu_seqlens, int32_t* count,
                          cudaStream_t stream) {
  if (rows * cols <= kStagedMaskTokens) {
    compact_kernel<true><<<1, kCompactThreads, 0, stream>>>(mask, rows, cols, routed, positions, bypass,
                                                            cu_seqlens, count);
  } else {
    compact_kernel<false><<<1, kCompactThreads, 0, stream>>>(mask, rows, cols, routed, positions, bypass,
                                                             cu_seqlens, count);
  }
  CUDA_CHECK_LAUNCH();
}

size_t sort_values_scratch_bytes(int64_t n) {
  return align_up(static_cast<size_t>(n) * sizeof(int32_t)) + sort_temp_bytes(n);
}

// A stable LSD radix sort of (key, index) pairs; CUB takes -0.0 and +0.0 as equal.
void launch_sort_values(const float* keys, float* sorted, int32_t* order, int64_t n, void* scratch,
                        size_t scratch_bytes, cudaStream_t stream) {
  if (n == 0) return;
  int32_t* index = static_cast<int32_t*>(scratch);
  char* temp = static_cast<char*>(scratch) + align_up(static_cast<size_t>(n) * sizeof(int32_t));
  size_t temp_bytes = scratch_bytes - align_up(static_cast<size_t>(n) * sizeof(int32_t));
  iota_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(index, n);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys, sorted, index, order, static_cast<int>(n),
                                             0, 32, stream));
}

}  // namespace dtrn::cuda

// Gathers and deterministic scatter-adds along one dimension of [outer, n, inner] (index.h).
//
// index_select is a copy of whole rows, so it moves the widest word (16, 8, 4 or 2 bytes) that divides
// a row and both base addresses, whatever the dtype.
//
// index_add runs in three steps on the stream: (1) keys[j] = index[j] as uint32 (range-checked) and
// positions[j] = j; (2) a stable radix sort of (key, position) pairs, which groups equal indices with
// their positions ascending; (3) a thread per (o, sorted slot k, i): the thread at the first slot of a
// run of equal keys adds src rows of the whole run, in position order, to out[o, key, i]. No two
// threads write the same element and the order of additions is fixed, so there are no atomics and the
// result does not depend on scheduling.
#include <cub/device/device_radix_sort.cuh>

#include <cstdio>

#include "cuda/compute.cuh"
#include "cuda/cuda_check.h"
#include "cuda/index.h"

namespace dtrn::cuda {
namespace {

template <typename Index>
__device__ __forceinline__ int64_t checked_index(const char* op, const Index* index, int64_t j,
                                                 int64_t n) {
  const int64_t i = static_cast<int64_t>(index[j]);
  if (i < 0 || i >= n) {
    printf("dtrn: %s: index %lld at position %lld is outside [0, %lld)\n", op,
           static_cast<long long>(i), static_cast<long long>(j), static_cast<long long>(n));
    __trap();
  }
  return i;
}

template <typename Word, typename Index>
__global__ void index_select_kernel(const Word* x, int64_t outer, int64_t n, int64_t row_words,
                                    const Index* index, int64_t m, Word* out) {
  const int64_t total = outer * m * row_words;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t w = t % row_words, r = t / row_words;
    const int64_t j = r % m, o = r / m;
    const int64_t src = checked_index("index_select", index, j, n);
    out[t] = x[(o * n + src) * row_words + w];
  }
}

template <typename Word>
void select_words(const void* x, int64_t outer, int64_t n, int64_t row_words, const void* index,
                  ElemType index_type, int64_t m, void* out, cudaStream_t stream) {
  const unsigned blocks = elementwise_blocks(outer * m * row_words);
  const Word* xw = static_cast<const Word*>(x);
  Word* ow = static_cast<Word*>(out);
  if (index_type == ElemType::kI32) {
    index_select_kernel<<<blocks, kElementwiseThreads, 0, stream>>>(
        xw, outer, n, row_words, static_cast<const int32_t*>(index), m, ow);
  } else {
    index_select_kernel<<<blocks, kElementwiseThreads, 0, stream>>>(
        xw, outer, n, row_words, static_cast<const int64_t*>(index), m, ow);
  }
}

template <typename Index>
__global__ void index_keys_kernel(const Index* index, int64_t m, int64_t n, uint32_t* keys,
                                  int32_t* positions) {
  for (int64_t j = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; j < m;
       j += int64_t{gridDim.x} * blockDim.x) {
    keys[j] = static_cast<uint32_t>(checked_index("index_add", index, j, n));
    positions[j] = static_cast<int32_t>(j);
  }
}

template <typename T>
__global__ void index_add_runs_kernel(T* out, int64_t outer, int64_t n, int64_t inner,
                                      const uint32_t* keys, const int32_t* positions, int64_t m,
                                      const T* src) {
  const int64_t total = outer * m * inner;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = t % inner, r = t / inner;
    const int64_t k = r % m, o = r / m;
    const uint32_t key = keys[k];
    if (k > 0 && keys[k - 1] == key) continue;  // not the first slot of its run
    T* dst = out + (o * n + key) * inner + i;
    Compute<T> acc = to_compute(*dst);
    for (int64_t p = k; p < m && keys[p] == key; ++p) {
      acc += to_compute(src[(o * m + positions[p]) * inner + i]);
    }
    *dst = from_compute<T>(acc);
  }
}

constexpr size_t kScratchAlign = 256;

size_t align_up(size_t bytes) { return (bytes + kScratchAlign - 1) / kScratchAlign * kScratchAlign; }

// Radix-sort bits covering keys in [0, n).
int key_bits(int64_t n) {
  int bits = 1;
  while ((int64_t{1} << bits) < n) ++bits;
  return bits;
}

// The four 32-bit arrays of m entries (keys and positions, unsorted and sorted) that precede CUB's
// temporary storage in the scratch buffer.
size_t key_arrays_bytes(int64_t m) { return 4 * align_up(static_cast<size_t>(m) * sizeof(uint32_t)); }

size_t sort_temp_bytes(int64_t n, int64_t m) {
  size_t bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const uint32_t*>(nullptr),
                                             static_cast<uint32_t*>(nullptr),
                                             static_cast<const int32_t*>(nullptr),
                                             static_cast<int32_t*>(nullptr), static_cast<int>(m), 0,
                                             key_bits(n)));
  return bytes;
}

}  // namespace

void launch_index_select(const void* x, int elem_bytes, int64_t outer, int64_t n, int64_t inner,
                         const void* index, ElemType index_type, int64_t m, void* out,
                         cudaStream_t stream) {
  if (outer * m * inner == 0) return;
  const int64_t row_bytes = inner * elem_bytes;
  const uintptr_t addresses = reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(out);
  int word = 16;
  while (word > elem_bytes && (row_bytes % word != 0 || addresses % word != 0)) word /= 2;
  const int64_t row_words = row_bytes / word;
  switch (word) {
    case 16: select_words<uint4>(x, outer, n, row_words, index, index_type, m, out, stream); break;
    case 8: select_words<uint2>(x, outer, n, row_words, index, index_type, m, out, stream); break;
    case 4: select_words<uint32_t>(x, outer, n, row_words, index, index_type, m, out, stream); break;
    default: select_words<uint16_t>(x, outer, n, row_words, index, index_type, m, out, stream); break;
  }
  CUDA_CHECK_LAUNCH();
}

size_t index_add_scratch_bytes(int64_t n, int64_t m) {
  return key_arrays_bytes(m) + sort_temp_bytes(n, m);
}

void launch_index_add(ElemType type, void* out, int64_t outer, int64_t n, int64_t inner,
                      const void* index, ElemType index_type, int64_t m, const void* src,
                      void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  if (outer * m * inner == 0) return;
  const size_t array_bytes = align_up(static_cast<size_t>(m) * sizeof(int32_t));
  char* base = static_cast<char*>(scratch);
  uint32_t* keys = reinterpret_cast<uint32_t*>(base);
  int32_t* positions = reinterpret_cast<int32_t*>(base + array_bytes);
  uint32_t* sorted_keys = reinterpret_cast<uint32_t*>(base + 2 * array_bytes);
  int32_t* sorted_positions = reinterpret_cast<int32_t*>(base + 3 * array_bytes);
  void* temp = base + key_arrays_bytes(m);
  size_t temp_bytes = scratch_bytes - key_arrays_bytes(m);

  const unsigned key_blocks = elementwise_blocks(m);
  if (index_type == ElemType::kI32) {
    index_keys_kernel<<<key_blocks, kElementwiseThreads, 0, stream>>>(
        static_cast<const int32_t*>(index), m, n, keys, positions);
  } else {
    index_keys_kernel<<<key_blocks, kElementwiseThreads, 0, stream>>>(
        static_cast<const int64_t*>(index), m, n, keys, positions);
  }
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys, sorted_keys, positions,
                                             sorted_positions, static_cast<int>(m), 0, key_bits(n),
                                             stream));
  dispatch_floating_elem(type, [&](auto tag) {
    using T = decltype(tag);
    index_add_runs_kernel<<<elementwise_blocks(outer * m * inner), kElementwiseThreads, 0, stream>>>(
        static_cast<T*>(out), outer, n, inner, sorted_keys, sorted_positions, m,
        static_cast<const T*>(src));
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace dtrn::cuda

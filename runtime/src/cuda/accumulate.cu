// Gradient accumulation (dst += src, converting) and the row scatter behind scatter_rows
// (train_kernels.h).
#include "cuda/cuda_check.h"
#include "cuda/device_types.cuh"
#include "cuda/train_kernels.h"

namespace dtrn::cuda {
namespace {

template <typename Dst, typename Src>
__global__ void add_into_kernel(Dst* dst, const Src* src, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    if constexpr (sizeof(Dst) == 8) {
      dst[i] = dst[i] + to_double(src[i]);
    } else {
      const float sum = Converter<float, Dst>::run(dst[i]) + Converter<float, Src>::run(src[i]);
      dst[i] = Converter<Dst, float>::run(sum);
    }
  }
}

template <typename Word, typename Index>
__global__ void index_copy_kernel(Word* out, const Word* src, const Index* index, int64_t outer, int64_t n,
                                  int64_t m, int64_t inner) {
  const int64_t total = outer * m * inner;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < total; e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t c = e % inner, row = e / inner;
    const int64_t j = row % m, o = row / m;
    out[(o * n + static_cast<int64_t>(index[j])) * inner + c] = src[e];
  }
}

template <typename Word>
void index_copy_words(void* out, const void* src, const void* index, bool index_i64, int64_t outer,
                      int64_t n, int64_t m, int64_t inner, cudaStream_t stream) {
  const int64_t total = outer * m * inner;
  if (index_i64) {
    index_copy_kernel<<<elementwise_blocks(total), kElementwiseThreads, 0, stream>>>(
        static_cast<Word*>(out), static_cast<const Word*>(src), static_cast<const int64_t*>(index), outer,
        n, m, inner);
  } else {
    index_copy_kernel<<<elementwise_blocks(total), kElementwiseThreads, 0, stream>>>(
        static_cast<Word*>(out), static_cast<const Word*>(src), static_cast<const int32_t*>(index), outer,
        n, m, inner);
  }
}

}  // namespace

void launch_add_into(void* dst, ElemType dst_type, const void* src, ElemType src_type, int64_t n,
                     cudaStream_t stream) {
  if (n == 0) return;
  dispatch_floating_elem(dst_type, [&](auto dst_tag) {
    using Dst = decltype(dst_tag);
    dispatch_floating_elem(src_type, [&](auto src_tag) {
      using Src = decltype(src_tag);
      add_into_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(
          static_cast<Dst*>(dst), static_cast<const Src*>(src), n);
    });
  });
  CUDA_CHECK_LAUNCH();
}

void launch_index_copy(void* out, const void* src, const void* index, bool index_i64, int64_t outer,
                       int64_t n, int64_t m, int64_t inner, int elem_bytes, cudaStream_t stream) {
  if (outer * m * inner == 0) return;
  // Rows move as whole words; a row of bf16 pairs moves as 4-byte words when its width allows.
  const bool aligned4 = reinterpret_cast<uintptr_t>(out) % 4 == 0 && reinterpret_cast<uintptr_t>(src) % 4 == 0;
  if (elem_bytes == 2 && inner % 2 == 0 && aligned4) {
    elem_bytes = 4;
    inner /= 2;
  }
  switch (elem_bytes) {
    case 2: index_copy_words<uint16_t>(out, src, index, index_i64, outer, n, m, inner, stream); break;
    case 4: index_copy_words<uint32_t>(out, src, index, index_i64, outer, n, m, inner, stream); break;
    default: index_copy_words<uint64_t>(out, src, index, index_i64, outer, n, m, inner, stream); break;
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace dtrn::cuda

// Fill and strided, converting copy: the memory kernels behind Tensor::full, contiguous(), to(DType) and
// copy_. See elementwise.h for the launch contracts.
#include <type_traits>

#include "cuda/cuda_check.h"
#include "cuda/device_types.cuh"

namespace dtrn::cuda {
namespace {

// A copy converts as the CPU stores: into bf16 with bf16.h's NaN (store_bf16), every other pair as
// Converter (Note [bf16 rounding in one instruction]).
template <typename Dst, typename Src>
__device__ __forceinline__ Dst stored(Src x) {
  if constexpr (std::is_same_v<Dst, Bf16> && !std::is_same_v<Src, Bf16>) {
    return store_bf16(static_cast<float>(to_double(x)));
  } else {
    return Converter<Dst, Src>::run(x);
  }
}

template <typename Word>
__global__ void fill_kernel(Word* data, int64_t n, Word value) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    data[i] = value;
  }
}

// Both operands dense: no index arithmetic beyond the linear index.
template <typename Src, typename Dst>
__global__ void copy_dense_kernel(const Src* src, Dst* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    dst[i] = stored<Dst>(src[i]);
  }
}

template <typename Src, typename Dst>
__global__ void copy_strided_kernel(const Src* src, Dst* dst, int64_t n, StridedIter<2> iter) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    int64_t off[2];
    iter.offsets(i, off);
    dst[off[1]] = stored<Dst>(src[off[0]]);
  }
}

int64_t numel(const StridedIter<2>& iter) {
  int64_t n = 1;
  for (int d = 0; d < iter.ndim; ++d) n *= iter.shape[d];
  return n;
}

template <typename Word>
void fill_words(void* data, int64_t n, uint64_t pattern, cudaStream_t stream) {
  fill_kernel<Word><<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(
      static_cast<Word*>(data), n, static_cast<Word>(pattern));
}

}  // namespace

void launch_fill(void* data, int64_t n, int elem_bytes, uint64_t pattern, cudaStream_t stream) {
  if (n == 0) return;
  if (pattern == 0) {
    CUDA_CHECK(cudaMemsetAsync(data, 0, static_cast<size_t>(n) * elem_bytes, stream));
    return;
  }
  switch (elem_bytes) {
    case 2: fill_words<uint16_t>(data, n, pattern, stream); break;
    case 4: fill_words<uint32_t>(data, n, pattern, stream); break;
    case 8: fill_words<uint64_t>(data, n, pattern, stream); break;
    default: break;  // cuda_backend.cc passes only dtype sizes
  }
  CUDA_CHECK_LAUNCH();
}

void launch_copy(const void* src, ElemType src_type, void* dst, ElemType dst_type,
                 const StridedIter<2>& iter, cudaStream_t stream) {
  const int64_t n = numel(iter);
  if (n == 0) return;
  const bool dense = iter.contiguous(0) && iter.contiguous(1);
  dispatch_elem(src_type, [&](auto src_tag) {
    using Src = decltype(src_tag);
    dispatch_elem(dst_type, [&](auto dst_tag) {
      using Dst = decltype(dst_tag);
      if (dense) {
        copy_dense_kernel<Src, Dst><<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(
            static_cast<const Src*>(src), static_cast<Dst*>(dst), n);
      } else {
        copy_strided_kernel<Src, Dst><<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(
            static_cast<const Src*>(src), static_cast<Dst*>(dst), n, iter);
      }
    });
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace dtrn::cuda

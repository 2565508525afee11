// Binary elementwise ops (add, sub, mul) over broadcast strided views into a contiguous output.
// bf16 operands compute in f32 and round once, matching the CPU reference of f32 math then .to(bf16).
#include "cuda/compute.cuh"
#include "cuda/cuda_check.h"
#include "cuda/device_types.cuh"

namespace dtrn::cuda {
namespace {

// The arithmetic type of an element type: bf16 computes in f32.
template <typename T>
struct Math {
  using type = T;
};
template <>
struct Math<Bf16> {
  using type = float;
};

template <ElemOp Op, typename M>
__device__ __forceinline__ M apply(M x, M y) {
  if constexpr (Op == ElemOp::kAdd) return x + y;
  if constexpr (Op == ElemOp::kSub) return x - y;
  return x * y;
}

template <ElemOp Op, typename T>
__device__ __forceinline__ T combine(T x, T y) {
  using M = typename Math<T>::type;
  return Converter<T, M>::run(apply<Op, M>(Converter<M, T>::run(x), Converter<M, T>::run(y)));
}

// Contiguous operands, W elements per access (W = 16 / sizeof(T) when all three pointers are
// 16-byte aligned: a bf16 add then moves 16 bytes per load instead of 2), the tail one element at a
// time.
template <ElemOp Op, typename T, int W>
__global__ void binary_dense_kernel(const T* a, const T* b, T* out, int64_t n) {
  const int64_t chunks = n / W;
  const int64_t first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x,
                step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t c = first; c < chunks; c += step) {
    const Chunk<T, W> x = reinterpret_cast<const Chunk<T, W>*>(a)[c];
    const Chunk<T, W> y = reinterpret_cast<const Chunk<T, W>*>(b)[c];
    Chunk<T, W> z;
#pragma unroll
    for (int e = 0; e < W; ++e) z.v[e] = combine<Op>(x.v[e], y.v[e]);
    reinterpret_cast<Chunk<T, W>*>(out)[c] = z;
  }
  for (int64_t i = chunks * W + first; i < n; i += step) out[i] = combine<Op>(a[i], b[i]);
}

template <ElemOp Op, typename T>
__global__ void binary_strided_kernel(const T* a, const T* b, T* out, int64_t n, StridedIter<2> iter) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    int64_t off[2];
    iter.offsets(i, off);
    out[i] = combine<Op>(a[off[0]], b[off[1]]);
  }
}

template <ElemOp Op, typename T>
void launch_typed(const T* a, const T* b, T* out, int64_t n, const StridedIter<2>& iter,
                  cudaStream_t stream) {
  if (iter.contiguous(0) && iter.contiguous(1)) {
    constexpr int W = kChunkElems<T>;
    const bool aligned =
        rows_aligned16(a, 0, 1) && rows_aligned16(b, 0, 1) && rows_aligned16(out, 0, 1);
    if (aligned && n >= W) {
      binary_dense_kernel<Op, T, W>
          <<<elementwise_blocks(n / W), kElementwiseThreads, 0, stream>>>(a, b, out, n);
    } else {
      binary_dense_kernel<Op, T, 1>
          <<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(a, b, out, n);
    }
  } else {
    binary_strided_kernel<Op, T><<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(a, b, out,
                                                                                            n, iter);
  }
}

}  // namespace

void launch_binary(ElemOp op, ElemType type, const void* a, const void* b, void* out,
                   const StridedIter<2>& iter, cudaStream_t stream) {
  int64_t n = 1;
  for (int d = 0; d < iter.ndim; ++d) n *= iter.shape[d];
  if (n == 0) return;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* pa = static_cast<const T*>(a);
    const T* pb = static_cast<const T*>(b);
    T* po = static_cast<T*>(out);
    switch (op) {
      case ElemOp::kAdd: launch_typed<ElemOp::kAdd>(pa, pb, po, n, iter, stream); break;
      case ElemOp::kSub: launch_typed<ElemOp::kSub>(pa, pb, po, n, iter, stream); break;
      case ElemOp::kMul: launch_typed<ElemOp::kMul>(pa, pb, po, n, iter, stream); break;
    }
  };
  dispatch_floating_elem(type, run);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dtrn::cuda

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

// One operand dense [R, C], the other a row [C] broadcast over the R rows (a bias): W elements per
// access when C is a multiple of W and every pointer is 16-byte aligned. kRowFirst: the row is the
// left operand. The same per-element expression as the strided kernel, so the same bits.
template <ElemOp Op, typename T, int W, bool kRowFirst>
__global__ void binary_row_kernel(const T* full, const T* row, T* out, int64_t chunks, int64_t row_chunks) {
  for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < chunks;
       c += int64_t{gridDim.x} * blockDim.x) {
    const Chunk<T, W> x = reinterpret_cast<const Chunk<T, W>*>(full)[c];
    const Chunk<T, W> y = reinterpret_cast<const Chunk<T, W>*>(row)[c % row_chunks];
    Chunk<T, W> z;
#pragma unroll
    for (int e = 0; e < W; ++e) z.v[e] = kRowFirst ? combine<Op>(y.v[e], x.v[e]) : combine<Op>(x.v[e], y.v[e]);
    reinterpret_cast<Chunk<T, W>*>(out)[c] = z;
  }
}

// True when operand i is a dense [R, C] matrix and the other a row broadcast over it (collapsed to
// two dimensions).
bool row_broadcast(const StridedIter<2>& iter, int dense) {
  const int row = 1 - dense;
  return iter.ndim == 2 && iter.strides[dense][0] == iter.shape[1] && iter.strides[dense][1] == 1 &&
         iter.strides[row][0] == 0 && iter.strides[row][1] == 1;
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
    return;
  }
  constexpr int W = kChunkElems<T>;
  const bool aligned = rows_aligned16(a, 0, 1) && rows_aligned16(b, 0, 1) && rows_aligned16(out, 0, 1);
  const int64_t cols = iter.ndim == 2 ? iter.shape[1] : 0;
  if (aligned && cols % W == 0 && (row_broadcast(iter, 0) || row_broadcast(iter, 1))) {
    const int64_t chunks = n / W, row_chunks = cols / W;
    const unsigned blocks = elementwise_blocks(chunks);
    if (row_broadcast(iter, 0)) {
      binary_row_kernel<Op, T, W, false><<<blocks, kElementwiseThreads, 0, stream>>>(a, b, out, chunks, row_chunks);
    } else {
      binary_row_kernel<Op, T, W, true><<<blocks, kElementwiseThreads, 0, stream>>>(b, a, out, chunks, row_chunks);
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

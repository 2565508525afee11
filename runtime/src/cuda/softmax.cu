// Softmax over the last dimension and its backward (softmax.h). Rows of at most kNarrow columns (the
// router's width 2) take a thread each, so a warp covers 32 rows; wider rows take a block each, which
// reduces the row's (max, sum) state (online_softmax.cuh) in a fixed tree, then writes the row.
// y_i = exp(x_i - max) / sum with the sum in double; the backward's dot product is in double too.
#include <type_traits>

#include "cuda/cuda_check.h"
#include "cuda/online_softmax.cuh"
#include "cuda/softmax.h"

namespace dtrn::cuda {
namespace {

constexpr int64_t kNarrow = 32;
constexpr int kThreads = 256;

template <typename T>
__device__ __forceinline__ T softmax_value(T x, MaxSum<Compute<T>> st) {
  return from_double<T>(exp_term(to_compute(x) - st.max) / st.sum);
}

template <typename T>
__global__ void softmax_narrow_kernel(const T* x, int64_t rows, int64_t cols, T* y) {
  for (int64_t row = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; row < rows;
       row += int64_t{gridDim.x} * blockDim.x) {
    const T* xr = x + row * cols;
    MaxSum<Compute<T>> st = empty_max_sum<Compute<T>>();
    for (int64_t i = 0; i < cols; ++i) add_element(st, to_compute(xr[i]));
    for (int64_t i = 0; i < cols; ++i) y[row * cols + i] = softmax_value(xr[i], st);
  }
}

template <int W, typename T>
__global__ void softmax_wide_kernel(const T* x, int64_t cols, T* y) {
  using M = Compute<T>;
  const T* xr = x + blockIdx.x * cols;
  MaxSum<M> st = empty_max_sum<M>();
  visit_row<W>(xr, cols, [&](int64_t, T v) { add_element(st, to_compute(v)); });
  st = block_reduce(st, CombineMaxSum{}, empty_max_sum<M>());
  transform_row<W>(xr, y + blockIdx.x * cols, cols, [&](int64_t, T v) { return softmax_value(v, st); });
}

template <typename T>
__global__ void softmax_backward_narrow_kernel(const T* y, const T* dy, int64_t rows, int64_t cols,
                                               T* dx) {
  for (int64_t row = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; row < rows;
       row += int64_t{gridDim.x} * blockDim.x) {
    const int64_t base = row * cols;
    double dot = 0;
    for (int64_t i = 0; i < cols; ++i) {
      dot += static_cast<double>(to_compute(dy[base + i])) * static_cast<double>(to_compute(y[base + i]));
    }
    for (int64_t i = 0; i < cols; ++i) {
      const double yi = static_cast<double>(to_compute(y[base + i]));
      dx[base + i] = from_double<T>(yi * (static_cast<double>(to_compute(dy[base + i])) - dot));
    }
  }
}

template <typename T>
__global__ void softmax_backward_wide_kernel(const T* y, const T* dy, int64_t cols, T* dx) {
  const int64_t base = blockIdx.x * cols;
  double dot = 0;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    dot += static_cast<double>(to_compute(dy[base + i])) * static_cast<double>(to_compute(y[base + i]));
  }
  dot = block_sum(dot);
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    const double yi = static_cast<double>(to_compute(y[base + i]));
    dx[base + i] = from_double<T>(yi * (static_cast<double>(to_compute(dy[base + i])) - dot));
  }
}

}  // namespace

void launch_softmax(ElemType type, const void* x, int64_t rows, int64_t cols, void* y,
                    cudaStream_t stream) {
  if (rows * cols == 0) return;
  dispatch_floating_elem(type, [&](auto tag) {
    using T = decltype(tag);
    const T* xt = static_cast<const T*>(x);
    T* yt = static_cast<T*>(y);
    if (cols <= kNarrow) {
      softmax_narrow_kernel<<<elementwise_blocks(rows), kElementwiseThreads, 0, stream>>>(xt, rows,
                                                                                          cols, yt);
    } else if (rows_aligned16(x, cols, sizeof(T)) && rows_aligned16(y, cols, sizeof(T))) {
      softmax_wide_kernel<kChunkElems<T>><<<rows, kThreads, 0, stream>>>(xt, cols, yt);
    } else {
      softmax_wide_kernel<1><<<rows, kThreads, 0, stream>>>(xt, cols, yt);
    }
  });
  CUDA_CHECK_LAUNCH();
}

void launch_softmax_backward(ElemType type, const void* y, const void* dy, int64_t rows,
                             int64_t cols, void* dx, cudaStream_t stream) {
  if (rows * cols == 0) return;
  dispatch_floating_elem(type, [&](auto tag) {
    using T = decltype(tag);
    const T* yt = static_cast<const T*>(y);
    const T* gt = static_cast<const T*>(dy);
    T* dt = static_cast<T*>(dx);
    if (cols <= kNarrow) {
      softmax_backward_narrow_kernel<<<elementwise_blocks(rows), kElementwiseThreads, 0, stream>>>(
          yt, gt, rows, cols, dt);
    } else {
      softmax_backward_wide_kernel<<<rows, kThreads, 0, stream>>>(yt, gt, cols, dt);
    }
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace dtrn::cuda

// RMSNorm forward and backward (norm.h). A block per row: the row's sum of squares (forward) or of
// dy * w * x (backward) is a block reduction in double, then every thread writes its elements. The
// weight gradient dw_i = sum over rows of dy_i x_i rstd is a column sum: a thread per (chunk of
// kRowChunk rows, column) writes its chunk's sum to scratch and finish_column_sums_kernel adds the
// chunks in order. Per-element arithmetic is the CPU's expression in double, rounded once.
#include "cuda/block_reduce.cuh"
#include "cuda/cuda_check.h"
#include "cuda/norm.h"

namespace dtrn::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kRowChunk = 128;

// The statistics type: f32 for f32 and bf16 data, f64 for f64.
template <typename T>
using Stat = Compute<T>;

template <typename T>
__device__ __forceinline__ double load_double(const T* p) {
  return static_cast<double>(to_compute(*p));
}

template <typename T>
__global__ void rmsnorm_kernel(const T* x, const T* w, double eps, int64_t cols, T* y,
                               Stat<T>* rstd) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * cols;
  T* yr = y + row * cols;
  double squares = 0;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    const double v = load_double(xr + i);
    squares += v * v;
  }
  squares = block_sum(squares);
  const double r = 1.0 / sqrt(squares / static_cast<double>(cols) + eps);
  if (threadIdx.x == 0) rstd[row] = static_cast<Stat<T>>(r);
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    yr[i] = from_double<T>(load_double(xr + i) * r * load_double(w + i));
  }
}

// dx_j = r w_j dy_j - (r^3 / C) x_j sum_i(dy_i w_i x_i), as in cpu/norm.cc.
template <typename T>
__global__ void rmsnorm_dx_kernel(const T* x, const T* w, const Stat<T>* rstd, const T* dy,
                                  int64_t cols, T* dx) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * cols;
  const T* gr = dy + row * cols;
  T* dr = dx + row * cols;
  double dot = 0;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    dot += load_double(gr + i) * load_double(w + i) * load_double(xr + i);
  }
  dot = block_sum(dot);
  const double r = static_cast<double>(rstd[row]);
  const double k = r * r * r * dot / static_cast<double>(cols);
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    dr[i] = from_double<T>(r * load_double(w + i) * load_double(gr + i) - k * load_double(xr + i));
  }
}

// out[s * cols + i] = sum over rows of chunk s of dy[row, i] x[row, i] rstd[row].
template <typename T, typename Out>
__global__ void rmsnorm_dw_chunks_kernel(const T* x, const Stat<T>* rstd, const T* dy, int64_t rows,
                                         int64_t cols, int64_t splits, Out* out) {
  const int64_t total = splits * cols;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = t % cols, s = t / cols;
    const int64_t begin = s * kRowChunk, end = begin + kRowChunk < rows ? begin + kRowChunk : rows;
    double acc = 0;
    for (int64_t row = begin; row < end; ++row) {
      acc += load_double(dy + row * cols + i) * load_double(x + row * cols + i) *
             static_cast<double>(rstd[row]);
    }
    out[t] = from_double<Out>(acc);
  }
}

int64_t dw_splits(int64_t rows) { return (rows + kRowChunk - 1) / kRowChunk; }

}  // namespace

void launch_rmsnorm(ElemType type, const void* x, const void* w, double eps, int64_t rows,
                    int64_t cols, void* y, void* rstd, cudaStream_t stream) {
  if (rows * cols == 0) return;
  dispatch_floating_elem(type, [&](auto tag) {
    using T = decltype(tag);
    rmsnorm_kernel<<<rows, kThreads, 0, stream>>>(static_cast<const T*>(x), static_cast<const T*>(w),
                                                  eps, cols, static_cast<T*>(y),
                                                  static_cast<Stat<T>*>(rstd));
  });
  CUDA_CHECK_LAUNCH();
}

size_t rmsnorm_backward_scratch_bytes(int64_t rows, int64_t cols) {
  const int64_t splits = dw_splits(rows);
  return splits > 1 ? static_cast<size_t>(splits * cols) * sizeof(double) : 0;
}

void launch_rmsnorm_backward(ElemType type, const void* x, const void* w, const void* rstd,
                             const void* dy, int64_t rows, int64_t cols, void* dx, void* dw,
                             void* scratch, cudaStream_t stream) {
  if (rows * cols == 0) return;
  const int64_t splits = dw_splits(rows);
  dispatch_floating_elem(type, [&](auto tag) {
    using T = decltype(tag);
    const T* xt = static_cast<const T*>(x);
    const Stat<T>* rt = static_cast<const Stat<T>*>(rstd);
    const T* gt = static_cast<const T*>(dy);
    rmsnorm_dx_kernel<<<rows, kThreads, 0, stream>>>(xt, static_cast<const T*>(w), rt, gt, cols,
                                                     static_cast<T*>(dx));
    CUDA_CHECK_LAUNCH();
    const unsigned blocks = elementwise_blocks(splits * cols);
    if (splits == 1) {
      rmsnorm_dw_chunks_kernel<<<blocks, kElementwiseThreads, 0, stream>>>(xt, rt, gt, rows, cols, 1,
                                                                           static_cast<T*>(dw));
    } else {
      double* partial = static_cast<double*>(scratch);
      rmsnorm_dw_chunks_kernel<<<blocks, kElementwiseThreads, 0, stream>>>(xt, rt, gt, rows, cols,
                                                                           splits, partial);
      CUDA_CHECK_LAUNCH();
      finish_column_sums_kernel<<<elementwise_blocks(cols), kElementwiseThreads, 0, stream>>>(
          partial, 1, splits, cols, static_cast<T*>(dw));
    }
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace dtrn::cuda

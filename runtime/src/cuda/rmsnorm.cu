// RMSNorm forward and backward (norm.h). A warp per row: the row's sum of squares (forward) or of
// dy * w * x (backward) is accumulated in double by each lane over its 16-byte chunks of the row
// and combined by a warp butterfly (no shared memory, no block barrier: a 360m row is 960 elements,
// too few to keep a 256-thread block busy between its two barriers); then each lane writes its
// chunks. Rows whose pointers are not 16-byte aligned take the same kernels one element per access.
// The weight gradient dw_i = sum over rows of dy_i x_i rstd is a column sum: a thread per (chunk of
// kRowChunk rows, 16-byte group of columns) writes its chunk's sums to scratch and
// finish_column_sums_kernel adds the chunks. Per-element arithmetic is the CPU's expression in
// double, rounded once; every sum has an order fixed by the shape (Note [Deterministic
// reductions]).
#include <initializer_list>
#include <type_traits>

#include "cuda/block_reduce.cuh"
#include "cuda/cuda_check.h"
#include "cuda/norm.h"

namespace dtrn::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / 32;
constexpr int64_t kRowChunk = 32;

// The statistics type: f32 for f32 and bf16 data, f64 for f64.
template <typename T>
using Stat = Compute<T>;

// Calls f(a[i], b[i], c[i]) for lane `lane`'s share of three rows of `count` elements: chunks of W
// with lane l taking chunks l, l + 32, ..., then the tail one element at a time. W > 1 needs
// 16-byte-aligned rows.
template <int W, typename T, typename F>
__device__ __forceinline__ void visit_warp_rows(const T* a, const T* b, const T* c, int64_t count,
                                                int lane, F&& f) {
  const int64_t chunks = W > 1 ? count / W : 0;
  for (int64_t k = lane; k < chunks; k += 32) {
    const Chunk<T, W> va = reinterpret_cast<const Chunk<T, W>*>(a)[k];
    const Chunk<T, W> vb = reinterpret_cast<const Chunk<T, W>*>(b)[k];
    const Chunk<T, W> vc = reinterpret_cast<const Chunk<T, W>*>(c)[k];
#pragma unroll
    for (int e = 0; e < W; ++e) f(va.v[e], vb.v[e], vc.v[e]);
  }
  for (int64_t i = chunks * W + lane; i < count; i += 32) f(a[i], b[i], c[i]);
}

// out[i] = g(a[i], b[i], c[i]) over lane `lane`'s share of the row, in the same chunks.
template <int W, typename T, typename G>
__device__ __forceinline__ void map_warp_row(const T* a, const T* b, const T* c, int64_t count,
                                             int lane, T* out, G&& g) {
  const int64_t chunks = W > 1 ? count / W : 0;
  for (int64_t k = lane; k < chunks; k += 32) {
    const Chunk<T, W> va = reinterpret_cast<const Chunk<T, W>*>(a)[k];
    const Chunk<T, W> vb = reinterpret_cast<const Chunk<T, W>*>(b)[k];
    const Chunk<T, W> vc = reinterpret_cast<const Chunk<T, W>*>(c)[k];
    Chunk<T, W> vo;
#pragma unroll
    for (int e = 0; e < W; ++e) vo.v[e] = g(va.v[e], vb.v[e], vc.v[e]);
    reinterpret_cast<Chunk<T, W>*>(out)[k] = vo;
  }
  for (int64_t i = chunks * W + lane; i < count; i += 32) out[i] = g(a[i], b[i], c[i]);
}

template <typename T, int W>
__global__ void rmsnorm_kernel(const T* x, const T* w, double eps, int64_t rows, int64_t cols, T* y,
                               Stat<T>* rstd) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * int64_t{kRowsPerBlock} + (threadIdx.x >> 5);
  if (row >= rows) return;  // the whole warp: a row is one warp's
  const T* xr = x + row * cols;
  double squares = 0;
  visit_warp_rows<W>(xr, xr, xr, cols, lane, [&](T v, T, T) {
    const double d = to_double(v);
    squares += d * d;
  });
  squares = warp_reduce(squares, Plus{});
  const double r = 1.0 / sqrt(squares / static_cast<double>(cols) + eps);
  if (lane == 0) rstd[row] = static_cast<Stat<T>>(r);
  map_warp_row<W>(xr, w, xr, cols, lane, y + row * cols,
                  [r](T xv, T wv, T) { return from_double<T>(to_double(xv) * r * to_double(wv)); });
}

// dx_j = r w_j dy_j - (r^3 / C) x_j sum_i(dy_i w_i x_i), as in cpu/norm.cc.
template <typename T, int W>
__global__ void rmsnorm_dx_kernel(const T* x, const T* w, const Stat<T>* rstd, const T* dy,
                                  int64_t rows, int64_t cols, T* dx) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * int64_t{kRowsPerBlock} + (threadIdx.x >> 5);
  if (row >= rows) return;
  const T* xr = x + row * cols;
  const T* gr = dy + row * cols;
  double dot = 0;
  visit_warp_rows<W>(gr, w, xr, cols, lane,
                     [&](T g, T wv, T xv) { dot += to_double(g) * to_double(wv) * to_double(xv); });
  dot = warp_reduce(dot, Plus{});
  const double r = static_cast<double>(rstd[row]);
  const double k = r * r * r * dot / static_cast<double>(cols);
  map_warp_row<W>(w, gr, xr, cols, lane, dx + row * cols, [r, k](T wv, T g, T xv) {
    return from_double<T>(r * to_double(wv) * to_double(g) - k * to_double(xv));
  });
}

// out[s * cols + i] = sum over rows of chunk s of dy[row, i] x[row, i] rstd[row], a thread per
// chunk of rows and W adjacent columns.
template <typename T, int W, typename Out>
__global__ void rmsnorm_dw_chunks_kernel(const T* x, const Stat<T>* rstd, const T* dy, int64_t rows,
                                         int64_t cols, int64_t splits, Out* out) {
  const int64_t groups = cols / W;  // W divides cols (the launcher checks)
  const int64_t total = splits * groups;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t group = t % groups, s = t / groups;
    const int64_t begin = s * kRowChunk, end = begin + kRowChunk < rows ? begin + kRowChunk : rows;
    double acc[W] = {};
    for (int64_t row = begin; row < end; ++row) {
      const Chunk<T, W> g = reinterpret_cast<const Chunk<T, W>*>(dy + row * cols)[group];
      const Chunk<T, W> xv = reinterpret_cast<const Chunk<T, W>*>(x + row * cols)[group];
      const double r = static_cast<double>(rstd[row]);
#pragma unroll
      for (int e = 0; e < W; ++e) acc[e] += to_double(g.v[e]) * to_double(xv.v[e]) * r;
    }
#pragma unroll
    for (int e = 0; e < W; ++e) out[s * cols + group * W + e] = from_double<Out>(acc[e]);
  }
}

int64_t dw_splits(int64_t rows) { return (rows + kRowChunk - 1) / kRowChunk; }

unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
}

// Calls f(std::integral_constant<int, W>) with W = 16-byte chunks when every row pointer allows
// them.
template <typename T, typename F>
void with_chunk_width(int64_t cols, std::initializer_list<const void*> rows, F&& f) {
  bool aligned = true;
  for (const void* p : rows) aligned = aligned && rows_aligned16(p, cols, sizeof(T));
  if (aligned) {
    f(std::integral_constant<int, kChunkElems<T>>{});
  } else {
    f(std::integral_constant<int, 1>{});
  }
}

}  // namespace

void launch_rmsnorm(ElemType type, const void* x, const void* w, double eps, int64_t rows,
                    int64_t cols, void* y, void* rstd, cudaStream_t stream) {
  if (rows * cols == 0) return;
  dispatch_floating_elem(type, [&](auto tag) {
    using T = decltype(tag);
    with_chunk_width<T>(cols, {x, w, y}, [&](auto width) {
      rmsnorm_kernel<T, width.value><<<row_blocks(rows), kThreads, 0, stream>>>(
          static_cast<const T*>(x), static_cast<const T*>(w), eps, rows, cols, static_cast<T*>(y),
          static_cast<Stat<T>*>(rstd));
    });
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
    with_chunk_width<T>(cols, {x, w, dy, dx}, [&](auto width) {
      constexpr int W = width.value;
      rmsnorm_dx_kernel<T, W><<<row_blocks(rows), kThreads, 0, stream>>>(
          xt, static_cast<const T*>(w), rt, gt, rows, cols, static_cast<T*>(dx));
      CUDA_CHECK_LAUNCH();
      const unsigned blocks = elementwise_blocks(splits * (cols / W));
      if (splits == 1) {
        rmsnorm_dw_chunks_kernel<T, W><<<blocks, kElementwiseThreads, 0, stream>>>(
            xt, rt, gt, rows, cols, 1, static_cast<T*>(dw));
      } else {
        double* partial = static_cast<double*>(scratch);
        rmsnorm_dw_chunks_kernel<T, W>
            <<<blocks, kElementwiseThreads, 0, stream>>>(xt, rt, gt, rows, cols, splits, partial);
        CUDA_CHECK_LAUNCH();
        launch_finish_column_sums(partial, 1, splits, cols, static_cast<T*>(dw), stream);
      }
      CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace dtrn::cuda

// RMSNorm forward and backward (norm.h), alone or fused with the residual add that produces its
// input. A warp per row: the row's sum of squares (forward) or of dy * w * x (backward) is
// accumulated in double by each lane over its 16-byte chunks of the row and combined by a warp
// butterfly (no shared memory, no block barrier: a 360m row is 960 elements, too few to keep a
// 256-thread block busy between its two barriers); then each lane writes its chunks. Rows whose
// pointers are not 16-byte aligned take the same kernels one element per access. The weight
// gradient dw_i = sum over rows of dy_i x_i rstd is a column sum: a thread per (chunk of kRowChunk
// rows, 16-byte group of columns) writes its chunk's sums to scratch and finish_column_sums_kernel
// adds the chunks. Per-element arithmetic is the CPU's expression in double, rounded once; every sum
// has an order fixed by the shape (Note [Deterministic reductions]).
//
// The fused kernels (add_rmsnorm) write h = x + delta in their first pass over the row, summing the
// squares of h as rounded, and read h back from cache for the normed output; the backward adds dh to
// the norm's dx as it writes it. Both share every per-element expression and the visiting order
// with the plain kernels (one device function each), so that with the same chunk width they give
// the bits of add then rmsnorm, and of rmsnorm_backward then add.
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

template <int W, typename T>
__device__ __forceinline__ Chunk<T, W> chunk_at(const T* row, int64_t k) {
  return reinterpret_cast<const Chunk<T, W>*>(row)[k];
}

template <int W, typename T, typename F, typename... C>
__device__ __forceinline__ void visit_chunks(F& f, const Chunk<T, W>& a, const C&... rest) {
#pragma unroll
  for (int e = 0; e < W; ++e) f(a.v[e], rest.v[e]...);
}

template <int W, typename T, typename G, typename... C>
__device__ __forceinline__ Chunk<T, W> map_chunks(G& g, const Chunk<T, W>& a, const C&... rest) {
  Chunk<T, W> out;
#pragma unroll
  for (int e = 0; e < W; ++e) out.v[e] = g(a.v[e], rest.v[e]...);
  return out;
}

// Calls f(row[i], rows[i]...) for lane `lane`'s share of rows of `count` elements: chunks of W with
// lane l taking chunks l, l + 32, ..., then the tail one element at a time (an order fixed by count,
// W and lane). W > 1 needs 16-byte-aligned rows.
template <int W, typename T, typename F, typename... R>
__device__ __forceinline__ void visit_warp_rows(int64_t count, int lane, F&& f, const T* row,
                                                const R*... rows) {
  const int64_t chunks = W > 1 ? count / W : 0;
  for (int64_t k = lane; k < chunks; k += 32) visit_chunks<W>(f, chunk_at<W>(row, k), chunk_at<W>(rows, k)...);
  for (int64_t i = chunks * W + lane; i < count; i += 32) f(row[i], rows[i]...);
}

// out[i] = g(row[i], rows[i]...) over lane `lane`'s share of the row, in visit_warp_rows' order.
template <int W, typename T, typename G, typename... R>
__device__ __forceinline__ void map_warp_rows(int64_t count, int lane, T* out, G&& g, const T* row,
                                              const R*... rows) {
  const int64_t chunks = W > 1 ? count / W : 0;
  for (int64_t k = lane; k < chunks; k += 32) {
    reinterpret_cast<Chunk<T, W>*>(out)[k] = map_chunks<W>(g, chunk_at<W>(row, k), chunk_at<W>(rows, k)...);
  }
  for (int64_t i = chunks * W + lane; i < count; i += 32) out[i] = g(row[i], rows[i]...);
}

// a + b rounded as launch_binary's add rounds it (in the compute type, rounded once).
template <typename T>
__device__ __forceinline__ T add_as_binary(T a, T b) {
  return from_compute<T>(to_compute(a) + to_compute(b));
}

template <typename T>
__device__ __forceinline__ void add_square(double& squares, T v) {
  const double d = to_double(v);
  squares += d * d;
}

// Given a lane's partial sum of squares of row xr: rstd, and y = x r w written.
template <int W, typename T>
__device__ __forceinline__ void normalize_row(double squares, const T* xr, const T* w, double eps,
                                              int64_t cols, int lane, T* yr, Stat<T>* rstd) {
  squares = warp_reduce(squares, Plus{});
  const double r = 1.0 / sqrt(squares / static_cast<double>(cols) + eps);
  if (lane == 0) *rstd = static_cast<Stat<T>>(r);
  map_warp_rows<W>(cols, lane, yr, [r](T xv, T wv) { return from_double<T>(to_double(xv) * r * to_double(wv)); },
                   xr, w);
}

template <typename T, int W>
__global__ void rmsnorm_kernel(const T* x, const T* w, double eps, int64_t rows, int64_t cols, T* y,
                               Stat<T>* rstd) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * int64_t{kRowsPerBlock} + (threadIdx.x >> 5);
  if (row >= rows) return;  // the whole warp: a row is one warp's
  const T* xr = x + row * cols;
  double squares = 0;
  visit_warp_rows<W>(cols, lane, [&](T v) { add_square(squares, v); }, xr);
  normalize_row<W>(squares, xr, w, eps, cols, lane, y + row * cols, rstd + row);
}

// h = x + delta, then the norm of h. Each lane reads back only the chunks it wrote.
template <typename T, int W>
__global__ void add_rmsnorm_kernel(const T* x, const T* delta, const T* w, double eps, int64_t rows,
                                   int64_t cols, T* h, T* y, Stat<T>* rstd) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * int64_t{kRowsPerBlock} + (threadIdx.x >> 5);
  if (row >= rows) return;
  T* hr = h + row * cols;
  double squares = 0;
  map_warp_rows<W>(cols, lane, hr,
                   [&](T a, T b) {
                     const T sum = add_as_binary(a, b);
                     add_square(squares, sum);
                     return sum;
                   },
                   x + row * cols, delta + row * cols);
  normalize_row<W>(squares, hr, w, eps, cols, lane, y + row * cols, rstd + row);
}

// dx_j = r w_j dy_j - (r^3 / C) x_j sum_i(dy_i w_i x_i), as in cpu/norm.cc; with a residual dh,
// dx_j = dh_j + that (rounded to T first: the unfused graph's add of the two gradients).
template <typename T, int W, bool kResidual>
__global__ void rmsnorm_dx_kernel(const T* x, const T* w, const Stat<T>* rstd, const T* dy,
                                  const T* dh, int64_t rows, int64_t cols, T* dx) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * int64_t{kRowsPerBlock} + (threadIdx.x >> 5);
  if (row >= rows) return;
  const T* xr = x + row * cols;
  const T* gr = dy + row * cols;
  double dot = 0;
  visit_warp_rows<W>(cols, lane, [&](T g, T wv, T xv) { dot += to_double(g) * to_double(wv) * to_double(xv); },
                     gr, w, xr);
  dot = warp_reduce(dot, Plus{});
  const double r = static_cast<double>(rstd[row]);
  const double k = r * r * r * dot / static_cast<double>(cols);
  const auto norm_dx = [r, k](T wv, T g, T xv) {
    return from_double<T>(r * to_double(wv) * to_double(g) - k * to_double(xv));
  };
  if constexpr (kResidual) {
    map_warp_rows<W>(cols, lane, dx + row * cols,
                     [&](T wv, T g, T xv, T res) { return add_as_binary(res, norm_dx(wv, g, xv)); }, w, gr,
                     xr, dh + row * cols);
  } else {
    map_warp_rows<W>(cols, lane, dx + row * cols, norm_dx, w, gr, xr);
  }
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
// them (null pointers, absent operands, are skipped).
template <typename T, typename F>
void with_chunk_width(int64_t cols, std::initializer_list<const void*> rows, F&& f) {
  bool aligned = true;
  for (const void* p : rows) aligned = aligned && (p == nullptr || rows_aligned16(p, cols, sizeof(T)));
  if (aligned) {
    f(std::integral_constant<int, kChunkElems<T>>{});
  } else {
    f(std::integral_constant<int, 1>{});
  }
}

// The backward of both norms: dx (plus dh when dh is not null) and dw.
void launch_norm_backward(ElemType type, const void* x, const void* w, const void* rstd, const void* dy,
                          const void* dh, int64_t rows, int64_t cols, void* dx, void* dw, void* scratch,
                          cudaStream_t stream) {
  if (rows * cols == 0) return;
  const int64_t splits = dw_splits(rows);
  dispatch_floating_elem(type, [&](auto tag) {
    using T = decltype(tag);
    const T* xt = static_cast<const T*>(x);
    const Stat<T>* rt = static_cast<const Stat<T>*>(rstd);
    const T* gt = static_cast<const T*>(dy);
    with_chunk_width<T>(cols, {x, w, dy, dh, dx}, [&](auto width) {
      constexpr int W = width.value;
      if (dh != nullptr) {
        rmsnorm_dx_kernel<T, W, true><<<row_blocks(rows), kThreads, 0, stream>>>(
            xt, static_cast<const T*>(w), rt, gt, static_cast<const T*>(dh), rows, cols, static_cast<T*>(dx));
      } else {
        rmsnorm_dx_kernel<T, W, false><<<row_blocks(rows), kThreads, 0, stream>>>(
            xt, static_cast<const T*>(w), rt, gt, nullptr, rows, cols, static_cast<T*>(dx));
      }
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

void launch_add_rmsnorm(ElemType type, const void* x, const void* delta, const void* w, double eps,
                        int64_t rows, int64_t cols, void* h, void* y, void* rstd, cudaStream_t stream) {
  if (rows * cols == 0) return;
  dispatch_floating_elem(type, [&](auto tag) {
    using T = decltype(tag);
    with_chunk_width<T>(cols, {x, delta, w, h, y}, [&](auto width) {
      add_rmsnorm_kernel<T, width.value><<<row_blocks(rows), kThreads, 0, stream>>>(
          static_cast<const T*>(x), static_cast<const T*>(delta), static_cast<const T*>(w), eps, rows, cols,
          static_cast<T*>(h), static_cast<T*>(y), static_cast<Stat<T>*>(rstd));
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
  launch_norm_backward(type, x, w, rstd, dy, nullptr, rows, cols, dx, dw, scratch, stream);
}

void launch_add_rmsnorm_backward(ElemType type, const void* h, const void* w, const void* rstd,
                                 const void* dy, const void* dh, int64_t rows, int64_t cols, void* dx,
                                 void* dw, void* scratch, cudaStream_t stream) {
  launch_norm_backward(type, h, w, rstd, dy, dh, rows, cols, dx, dw, scratch, stream);
}

}  // namespace dtrn::cuda

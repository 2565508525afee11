// RMSNorm forward and backward (norm.h), alone or fused with the residual add that produces its
// input. A warp per row: the row's sum of squares (forward) or of dy * w * x (backward) is
// accumulated in double by each lane over its 16-byte chunks of the row and combined by a warp
// butterfly (no shared memory, no block barrier: a 360m row is 960 elements, too few to keep a
// 256-thread block busy between its two barriers); then each lane writes its chunks. Rows whose
// pointers are not 16-byte aligned take the same kernels one element per access. Per-element
// arithmetic is the CPU's expression in double, rounded once, with the exceptions of Note [Exact
// products in f32] for bf16; every sum has an order fixed by the shape (Note [Deterministic
// reductions]).
//
// Note [Exact products in f32]: on sm_90 a conversion between f32 and f64 runs at a quarter of the
// FP64 rate, and a bf16 row's kernel is bound by them rather than by memory if it widens every
// factor. Two bf16 values (8 significant bits each) multiply exactly in f32, and so do three, so
// the kernels form products of bf16 factors in f32 and widen the product once (product,
// dot_term); f32 factors are widened and multiply exactly in double (f64 ones round there, as on
// the CPU). Only a bf16 product below f32's normal range (2^-126) would round, by under 2^-149. The
// weight meets x (or dy) before r: r (x w), one double rounding fewer than the CPU's x r w. A bf16
// forward output y = r (x w) needs no double at all: it is formed in f32 from the f32 rstd it stores
// (the one the backward reads), two roundings of 2^-24 that can move the bf16 result to the other
// neighbour only where the exact value lies that close to a rounding boundary, still within half a
// bf16 step (plus 2^-23 relative) of it. The backward's dx stays in double: r w dy - k x can cancel.
//
// The weight gradient dw_i = sum over rows of dy_i x_i rstd is a column sum, formed in the pass
// that computes dx (which reads dy and x anyway): each block of the backward owns a range of rows
// fixed by the row count (backward_block_rows) and writes their column sums, in double, as one row
// of scratch; finish_column_sums_kernel adds those rows in a fixed order. Rows wider than a lane's
// registers hold (more than 32 kMaxChunksPerLane chunks) take a dx kernel and a separate dw pass
// over the same row blocks.
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
// The backward runs at most this many blocks, each owning an equal range of rows (a multiple of
// kRowsPerBlock, at least one row a warp): at two blocks an SM (128 registers a thread, see
// backward_blocks_per_sm) 256 blocks are one wave on an H200's 132 SMs, so every warp is resident
// with a whole row's 16-byte loads in flight, however many rows there are; and dw's partials stay
// at most 256 rows of doubles (2 MB for 960 columns, beside the 63 MB of dy and x a [16384, 960]
// bf16 step reads, where a block owns 64 rows). More blocks would only add partials and waves;
// fewer would leave SMs idle.
constexpr int64_t kBackwardBlocks = 256;
// A lane of the fused backward keeps up to this many 16-byte chunks of dy and x and their column
// accumulators in registers: rows up to 2048 bf16, 1024 f32, 512 f64 (or 256 unaligned) elements.
constexpr int kMaxChunksPerLane = 8;

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
// W and lane). W > 1 needs 16-byte-aligned rows. The chunk loop is unrolled so that a lane's loads of
// a 360m row (4 chunks) are in flight together rather than one round trip each; f's calls keep their
// order.
template <int W, typename T, typename F, typename... R>
__device__ __forceinline__ void visit_warp_rows(int64_t count, int lane, F&& f, const T* row,
                                                const R*... rows) {
  const int64_t chunks = W > 1 ? count / W : 0;
#pragma unroll 4
  for (int64_t k = lane; k < chunks; k += 32) visit_chunks<W>(f, chunk_at<W>(row, k), chunk_at<W>(rows, k)...);
  for (int64_t i = chunks * W + lane; i < count; i += 32) f(row[i], rows[i]...);
}

// out[i] = g(row[i], rows[i]...) over lane `lane`'s share of the row, in visit_warp_rows' order.
template <int W, typename T, typename G, typename... R>
__device__ __forceinline__ void map_warp_rows(int64_t count, int lane, T* out, G&& g, const T* row,
                                              const R*... rows) {
  const int64_t chunks = W > 1 ? count / W : 0;
#pragma unroll 4
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

// a b in double (Note [Exact products in f32]): exact for bf16 and f32 factors, rounded for f64.
template <typename T>
__device__ __forceinline__ double product(T a, T b) {
  return to_double(a) * to_double(b);
}
__device__ __forceinline__ double product(Bf16 a, Bf16 b) { return bf16_to_float(a) * bf16_to_float(b); }

// y = r x w rounded to T (Note [Exact products in f32]; rstd is r rounded to Stat<T>).
template <typename T>
__device__ __forceinline__ T normalized(double r, T xv, T wv) {
  return from_double<T>(r * product(xv, wv));
}
__device__ __forceinline__ Bf16 normalized(double r, Bf16 xv, Bf16 wv) {
  return round_bf16(static_cast<float>(r) * (bf16_to_float(xv) * bf16_to_float(wv)));
}

template <typename T>
__device__ __forceinline__ void add_square(double& squares, T v) {
  squares += product(v, v);
}

// Given a lane's partial sum of squares of row xr: rstd, and y = x r w written.
template <int W, typename T>
__device__ __forceinline__ void normalize_row(double squares, const T* xr, const T* w, double eps,
                                              int64_t cols, int lane, T* yr, Stat<T>* rstd) {
  squares = warp_reduce(squares, Plus{});
  const double r = 1.0 / sqrt(squares / static_cast<double>(cols) + eps);
  if (lane == 0) *rstd = static_cast<Stat<T>>(r);
  map_warp_rows<W>(cols, lane, yr, [r](T xv, T wv) { return normalized(r, xv, wv); }, xr, w);
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

// The backward's per-element expressions, written once for the fused kernel and the wide-row pair:
// dx_j = r w_j dy_j - (r^3 / C) x_j sum_i(dy_i w_i x_i) as in cpu/norm.cc, with a residual dh
// dx_j = dh_j + that (rounded to T first: the unfused graph's add of the two gradients), and the
// weight gradient's terms dy_i x_i r. Products as Note [Exact products in f32].
template <typename T>
__device__ __forceinline__ double dot_term(T g, T wv, T xv) {
  return product(g, wv) * to_double(xv);
}
// 24 significant bits: exact in f32.
__device__ __forceinline__ double dot_term(Bf16 g, Bf16 wv, Bf16 xv) {
  return bf16_to_float(g) * bf16_to_float(wv) * bf16_to_float(xv);
}

// The x coefficient of a row's dx, given its rstd r and its warp-reduced dot.
__device__ __forceinline__ double dx_scale(double r, double dot, int64_t cols) {
  return r * r * r * dot / static_cast<double>(cols);
}

template <typename T>
__device__ __forceinline__ T norm_dx(double r, double k, T wv, T g, T xv) {
  return from_double<T>(r * product(wv, g) - k * to_double(xv));
}

template <typename T>
__device__ __forceinline__ double dw_term(T g, T xv, double r) {
  return product(g, xv) * r;
}

// Two blocks an SM (at most 128 registers a thread) when a lane's column accumulators (2 registers
// a double) and its held 16-byte chunks of dy, x and dh (4 registers each) leave room for the
// rest; otherwise one, rather than spilling much. The 360m bf16 rows (K = 4, W = 8) get two, every
// warp of a 16384-row step resident at once, and neither kernel spills there (ptxas -v, CUDA 13,
// sm_90) because the residual one loads a dh chunk only as it writes that chunk of dx: holding all
// of them from the row's start cost it ~112 bytes a thread of spills.
template <int W, int K>
constexpr int backward_blocks_per_sm() {
  return 2 * K * W + 12 * K <= 112 ? 2 : 1;
}

// dx (plus dh when kResidual) and block b's share of dw: b owns rows [b block_rows, (b + 1)
// block_rows), which its warps take kRowsPerBlock apart. A lane loads its K chunks of dy and x
// (chunks lane, lane + 32, ...: visit_warp_rows' order and the wide-row kernel's expressions)
// once, keeps them in registers for the row's dot and its dx, and adds dy x rstd into its
// columns' double accumulators; dh is read chunk by chunk as dx is written. At the end the warps'
// accumulators are added in warp order through shared memory and the last warp writes the sums as
// row b of partial [blocks, cols]. W divides cols and 32 K chunks cover the row (the launcher
// checks).
template <typename T, int W, int K, bool kResidual>
__global__ void __launch_bounds__(kThreads, backward_blocks_per_sm<W, K>())
    rmsnorm_backward_kernel(const T* x, const T* w, const Stat<T>* rstd, const T* dy, const T* dh,
                            int64_t rows, int64_t cols, int64_t block_rows, T* dx,
                            double* partial) {
  __shared__ double sums[K * W * 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t chunks = cols / W;
  const int64_t first = blockIdx.x * block_rows;
  const int64_t end = first + block_rows < rows ? first + block_rows : rows;
  double acc[K][W] = {};
  for (int64_t row = first + warp; row < end; row += kRowsPerBlock) {
    const int64_t at = row * cols;
    Chunk<T, W> g[K], xv[K];
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (lane + 32 * k < chunks) {
        g[k] = chunk_at<W>(dy + at, lane + 32 * k);
        xv[k] = chunk_at<W>(x + at, lane + 32 * k);
      }
    }
    const double r = static_cast<double>(rstd[row]);
    double dot = 0;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (lane + 32 * k < chunks) {
        const Chunk<T, W> wv = chunk_at<W>(w, lane + 32 * k);
#pragma unroll
        for (int e = 0; e < W; ++e) {
          dot += dot_term(g[k].v[e], wv.v[e], xv[k].v[e]);
          acc[k][e] += dw_term(g[k].v[e], xv[k].v[e], r);
        }
      }
    }
    dot = warp_reduce(dot, Plus{});
    const double scale = dx_scale(r, dot, cols);
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (lane + 32 * k < chunks) {
        const Chunk<T, W> wv = chunk_at<W>(w, lane + 32 * k);
        Chunk<T, W> res;
        if constexpr (kResidual) res = chunk_at<W>(dh + at, lane + 32 * k);
        Chunk<T, W> out;
#pragma unroll
        for (int e = 0; e < W; ++e) {
          const T d = norm_dx(r, scale, wv.v[e], g[k].v[e], xv[k].v[e]);
          if constexpr (kResidual) {
            out.v[e] = add_as_binary(res.v[e], d);
          } else {
            out.v[e] = d;
          }
        }
        reinterpret_cast<Chunk<T, W>*>(dx + at)[lane + 32 * k] = out;
      }
    }
  }
  double* sum_row = partial + blockIdx.x * cols;
  for (int from = 0; from < kRowsPerBlock; ++from) {
    if (warp == from) {
#pragma unroll
      for (int k = 0; k < K; ++k) {
        if (lane + 32 * k < chunks) {
#pragma unroll
          for (int e = 0; e < W; ++e) {
            double& s = sums[(k * W + e) * 32 + lane];  // lane-minor: no bank conflicts
            const double total = from == 0 ? acc[k][e] : s + acc[k][e];
            if (from == kRowsPerBlock - 1) {
              sum_row[(lane + 32 * k) * W + e] = total;
            } else {
              s = total;
            }
          }
        }
      }
    }
    __syncthreads();
  }
}

// Rows too wide for rmsnorm_backward_kernel's registers: dx by a warp per row reading the row
// twice (once for the dot, once for dx), then dw by rmsnorm_dw_chunks_kernel from a second read.
template <typename T, int W, bool kResidual>
__global__ void rmsnorm_dx_kernel(const T* x, const T* w, const Stat<T>* rstd, const T* dy,
                                  const T* dh, int64_t rows, int64_t cols, T* dx) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * int64_t{kRowsPerBlock} + (threadIdx.x >> 5);
  if (row >= rows) return;
  const T* xr = x + row * cols;
  const T* gr = dy + row * cols;
  double dot = 0;
  visit_warp_rows<W>(cols, lane, [&](T g, T wv, T xv) { dot += dot_term(g, wv, xv); }, gr, w, xr);
  dot = warp_reduce(dot, Plus{});
  const double r = static_cast<double>(rstd[row]);
  const double scale = dx_scale(r, dot, cols);
  const auto plain = [r, scale](T wv, T g, T xv) { return norm_dx(r, scale, wv, g, xv); };
  if constexpr (kResidual) {
    map_warp_rows<W>(cols, lane, dx + row * cols,
                     [&](T wv, T g, T xv, T res) { return add_as_binary(res, plain(wv, g, xv)); }, w, gr,
                     xr, dh + row * cols);
  } else {
    map_warp_rows<W>(cols, lane, dx + row * cols, plain, w, gr, xr);
  }
}

// partial[s * cols + i] = sum over the rows of block s (as rmsnorm_backward_kernel's blocks) of
// dy[row, i] x[row, i] rstd[row], a thread per (block of rows, W adjacent columns).
template <typename T, int W>
__global__ void rmsnorm_dw_chunks_kernel(const T* x, const Stat<T>* rstd, const T* dy, int64_t rows,
                                         int64_t cols, int64_t block_rows, int64_t splits,
                                         double* partial) {
  const int64_t groups = cols / W;  // W divides cols (the launcher checks)
  const int64_t total = splits * groups;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t group = t % groups, s = t / groups;
    const int64_t begin = s * block_rows;
    const int64_t end = begin + block_rows < rows ? begin + block_rows : rows;
    double acc[W] = {};
    for (int64_t row = begin; row < end; ++row) {
      const Chunk<T, W> g = reinterpret_cast<const Chunk<T, W>*>(dy + row * cols)[group];
      const Chunk<T, W> xv = reinterpret_cast<const Chunk<T, W>*>(x + row * cols)[group];
      const double r = static_cast<double>(rstd[row]);
#pragma unroll
      for (int e = 0; e < W; ++e) acc[e] += dw_term(g.v[e], xv.v[e], r);
    }
#pragma unroll
    for (int e = 0; e < W; ++e) partial[s * cols + group * W + e] = acc[e];
  }
}

// Rows a block of the backward owns: rows / kBackwardBlocks rounded up to whole kRowsPerBlock, at
// least kRowsPerBlock (also when there are no rows).
int64_t backward_block_rows(int64_t rows) {
  const int64_t per_block = (rows + kBackwardBlocks - 1) / kBackwardBlocks;
  const int64_t rounded = (per_block + kRowsPerBlock - 1) / kRowsPerBlock * kRowsPerBlock;
  return rounded > kRowsPerBlock ? rounded : kRowsPerBlock;
}

int64_t backward_blocks(int64_t rows) {
  const int64_t block_rows = backward_block_rows(rows);
  return (rows + block_rows - 1) / block_rows;
}

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

// Calls f(std::integral_constant<int, K>) with the fewest chunks per lane K in {1, 2, 4, 8} that
// cover `chunks` chunks of a row; false when none does (the row is too wide for the fused kernel).
// Powers of two bound the instances; a lane's unused chunks are skipped, not loaded.
template <typename F>
bool with_chunks_per_lane(int64_t chunks, F&& f) {
  if (chunks <= 32) {
    f(std::integral_constant<int, 1>{});
  } else if (chunks <= 64) {
    f(std::integral_constant<int, 2>{});
  } else if (chunks <= 128) {
    f(std::integral_constant<int, 4>{});
  } else if (chunks <= 32 * kMaxChunksPerLane) {
    f(std::integral_constant<int, kMaxChunksPerLane>{});
  } else {
    return false;
  }
  return true;
}

// The backward of both norms: dx (plus dh when dh is not null) and the per-block partial sums of
// dw in `partial` (backward_blocks(rows) rows of cols doubles), then dw = their fixed-order sum.
template <typename T, int W>
void launch_norm_backward_typed(const T* x, const T* w, const Stat<T>* rstd, const T* dy,
                                const T* dh, int64_t rows, int64_t cols, T* dx, T* dw,
                                double* partial, cudaStream_t stream) {
  const int64_t block_rows = backward_block_rows(rows), splits = backward_blocks(rows);
  const bool fused = with_chunks_per_lane(cols / W, [&](auto per_lane) {
    constexpr int K = per_lane.value;
    const unsigned blocks = static_cast<unsigned>(splits);
    if (dh != nullptr) {
      rmsnorm_backward_kernel<T, W, K, true>
          <<<blocks, kThreads, 0, stream>>>(x, w, rstd, dy, dh, rows, cols, block_rows, dx,
                                            partial);
    } else {
      rmsnorm_backward_kernel<T, W, K, false>
          <<<blocks, kThreads, 0, stream>>>(x, w, rstd, dy, nullptr, rows, cols, block_rows, dx,
                                            partial);
    }
  });
  if (!fused) {
    if (dh != nullptr) {
      rmsnorm_dx_kernel<T, W, true>
          <<<row_blocks(rows), kThreads, 0, stream>>>(x, w, rstd, dy, dh, rows, cols, dx);
    } else {
      rmsnorm_dx_kernel<T, W, false>
          <<<row_blocks(rows), kThreads, 0, stream>>>(x, w, rstd, dy, nullptr, rows, cols, dx);
    }
    CUDA_CHECK_LAUNCH();
    const unsigned blocks = elementwise_blocks(splits * (cols / W));
    rmsnorm_dw_chunks_kernel<T, W><<<blocks, kElementwiseThreads, 0, stream>>>(
        x, rstd, dy, rows, cols, block_rows, splits, partial);
  }
  CUDA_CHECK_LAUNCH();
  launch_finish_column_sums(partial, 1, splits, cols, dw, stream);
  CUDA_CHECK_LAUNCH();
}

void launch_norm_backward(ElemType type, const void* x, const void* w, const void* rstd, const void* dy,
                          const void* dh, int64_t rows, int64_t cols, void* dx, void* dw, void* scratch,
                          cudaStream_t stream) {
  if (rows * cols == 0) return;
  dispatch_floating_elem(type, [&](auto tag) {
    using T = decltype(tag);
    with_chunk_width<T>(cols, {x, w, dy, dh, dx}, [&](auto width) {
      launch_norm_backward_typed<T, width.value>(
          static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const Stat<T>*>(rstd),
          static_cast<const T*>(dy), static_cast<const T*>(dh), rows, cols, static_cast<T*>(dx),
          static_cast<T*>(dw), static_cast<double*>(scratch), stream);
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
  return static_cast<size_t>(backward_blocks(rows) * cols) * sizeof(double);
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

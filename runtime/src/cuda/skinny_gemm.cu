// Skinny matrix products (skinny_gemm.h). Three kernels, chosen by the shape:
//
// Note [The skinny view of a product]
// When n <= kSkinnyMax, C[l, j] = sum_k op(A)[l, k] op(B)[k, j] has a big operand X = A with L = m
// rows of output and a small one S = op(B)^T with s = n rows; when m <= kSkinnyMax (and n is not
// small) the roles swap: X = B with L = n, S = op(A), and C[j, l] is written. Each element of the
// output is O[l, j] = sum_k X[l, k] S[j, k], with
//   - X's rows along k (A untransposed, or B transposed): the dot kernel, a warp per output row l
//     reading X's row once and every S row beside it (S is small: it stays in L1/L2); the router's
//     forward, [N, R] x [2, R]^T. It does not split k: a long k over few rows (m and n both small)
//     runs on few warps, correct but slow; no training product has that shape;
//   - X's rows along l (k is X's leading index): the column kernel, a thread per 16-byte chunk of l
//     walking rows of k, k split over blocks (partial sums in scratch, added in a fixed order by the
//     finish kernel); the router's weight gradient, [N, 2]^T x [N, R] with k = N.
// A small k with both m and n large (the router's input gradient, [N, 2] x [2, R]) is an outer
// product: the small-k kernel, a thread per 16-byte chunk of C's row, reading k values of op(A) and k
// chunks of op(B).
//
// Every output element's sum runs in an order fixed by the shape (and by the operands' 16-byte
// alignment, which picks chunked or scalar loads), so results are bitwise reproducible.
#include "cuda/block_reduce.cuh"
#include "cuda/compute.cuh"
#include "cuda/cuda_check.h"
#include "cuda/skinny_gemm.h"

#include <algorithm>

namespace dtrn::cuda {
namespace {

constexpr int kWarps = 8;  // per block, every kernel here
constexpr int kThreads = 32 * kWarps;
constexpr int kMaxS = static_cast<int>(kSkinnyMax);
// The column kernel splits k into pieces of at least kMinSplitRows rows, as many as make about
// kTargetBlocks blocks (an H200 has 132 SMs; memory-bound loops need several blocks each in flight).
constexpr int64_t kMinSplitRows = 128;
constexpr int64_t kTargetBlocks = 1024;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// Note [The skinny view of a product]: O[l, j] = sum_k X[l, k] S[j, k].
struct SkinnyView {
  bool x_is_a;     // X is A (n small) or B (m small)
  bool dot;        // X[l, k] at x + l * K + k (rows along k), else at x + k * L + l
  int64_t L, K;
  int s;           // rows of S, <= kMaxS
  int64_t sj, sk;  // S[j, k] at s + j * sj + k * sk
  int64_t cl, cj;  // O[l, j] at c + l * cl + j * cj
};

SkinnyView view_of(const SkinnyGemmArgs& g) {
  SkinnyView v{};
  v.K = g.k;
  if (g.n <= kSkinnyMax) {
    v.x_is_a = true;
    v.L = g.m;
    v.s = static_cast<int>(g.n);
    v.dot = !g.trans_a;
    v.sj = g.trans_b ? g.k : 1;
    v.sk = g.trans_b ? 1 : g.n;
    v.cl = g.n;
    v.cj = 1;
  } else {
    v.x_is_a = false;
    v.L = g.n;
    v.s = static_cast<int>(g.m);
    v.dot = g.trans_b;
    v.sj = g.trans_a ? 1 : g.k;
    v.sk = g.trans_a ? g.m : 1;
    v.cl = 1;
    v.cj = g.n;
  }
  return v;
}

bool uses_view(const SkinnyGemmArgs& g) { return g.m <= kSkinnyMax || g.n <= kSkinnyMax; }

int64_t chunk_elems(ElemType ab) { return ab == ElemType::kBF16 ? 8 : 4; }

// Rows of k per block of the column kernel. From the shape and dtype alone (the nominal 16-byte tiling,
// whatever the pointers' alignment), so that the split, hence the bits, never depend on placement.
int64_t column_split_rows(const SkinnyView& v, ElemType ab) {
  const int64_t tiles = ceil_div(v.L, 32 * chunk_elems(ab));
  const int64_t wanted = std::max<int64_t>(1, kTargetBlocks / tiles);
  const int64_t splits = std::min(wanted, ceil_div(v.K, kMinSplitRows));
  return ceil_div(v.K, splits);
}

// ---- Device side

__device__ __forceinline__ float as_float(float x) { return x; }
__device__ __forceinline__ float as_float(Bf16 x) { return bf16_to_float(x); }

template <typename Out>
__device__ __forceinline__ Out from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ Bf16 from_float<Bf16>(float v) {
  return round_bf16(v);
}

// alpha * acc + beta * old, as cuBLASLt's epilogue; callers do not read old when beta == 0 (C may hold
// anything then, NaN included).
__device__ __forceinline__ float scaled(float acc, float alpha, float beta, float old) {
  return beta == 0.0f ? alpha * acc : fmaf(beta, old, alpha * acc);
}

// W consecutive elements at p as floats: one access of W * sizeof(T) bytes (aligned to it) when W > 1.
template <int W, typename T>
__device__ __forceinline__ void load_floats(const T* p, float (&out)[W]) {
  if constexpr (W == 1) {
    out[0] = as_float(*p);
  } else {
    const Chunk<T, W> v = *reinterpret_cast<const Chunk<T, W>*>(p);
#pragma unroll
    for (int e = 0; e < W; ++e) out[e] = as_float(v.v[e]);
  }
}

// W floats stored at p as one W * sizeof(Out)-byte access (aligned to it); bf16 pairs packed into
// 32-bit words, which keeps the chunk in registers.
template <int W>
__device__ __forceinline__ void store_floats(float* p, const float (&v)[W]) {
  Chunk<float, W> chunk;
#pragma unroll
  for (int e = 0; e < W; ++e) chunk.v[e] = v[e];
  *reinterpret_cast<Chunk<float, W>*>(p) = chunk;
}
template <int W>
__device__ __forceinline__ void store_floats(Bf16* p, const float (&v)[W]) {
  Chunk<uint32_t, W / 2> chunk;
#pragma unroll
  for (int e = 0; e < W / 2; ++e) {
    chunk.v[e] = round_bf16(v[2 * e]).bits | static_cast<uint32_t>(round_bf16(v[2 * e + 1]).bits) << 16;
  }
  *reinterpret_cast<Chunk<uint32_t, W / 2>*>(p) = chunk;
}

template <typename Out>
__device__ __forceinline__ void store_result(Out* p, float acc, float alpha, float beta) {
  *p = from_float<Out>(scaled(acc, alpha, beta, beta == 0.0f ? 0.0f : as_float(*p)));
}

// A warp per output row l: lane t takes the W-element chunks t, t + 32, ... of X's row, then the warp
// adds its lanes in a fixed butterfly. W > 1 needs X's rows (and, with kVecS, S's rows) 16-byte aligned.
template <typename T, typename Out, int W, bool kVecS>
__global__ void __launch_bounds__(kThreads)
    dot_kernel(const T* x, const T* s, SkinnyView v, float alpha, float beta, Out* c) {
  const int lane = threadIdx.x & 31;
  const int64_t l = blockIdx.x * int64_t{kWarps} + (threadIdx.x >> 5);
  if (l >= v.L) return;  // the whole warp: nothing below synchronises the block
  const T* row = x + l * v.K;
  float acc[kMaxS] = {};
  for (int64_t q = lane; q < v.K / W; q += 32) {
    const int64_t k = q * W;
    float xv[W];
    load_floats<W>(row + k, xv);
#pragma unroll
    for (int j = 0; j < kMaxS; ++j) {
      if (j >= v.s) break;
      float sv[W];
      if constexpr (kVecS) {
        load_floats<W>(s + j * v.sj + k, sv);
      } else {
#pragma unroll
        for (int e = 0; e < W; ++e) sv[e] = as_float(s[j * v.sj + (k + e) * v.sk]);
      }
#pragma unroll
      for (int e = 0; e < W; ++e) acc[j] = fmaf(xv[e], sv[e], acc[j]);
    }
  }
#pragma unroll
  for (int j = 0; j < kMaxS; ++j) {
    if (j >= v.s) break;
    const float total = warp_reduce(acc[j], Plus{});
    if (lane == j) store_result(c + l * v.cl + j * v.cj, total, alpha, beta);
  }
}

// Block (tile, split): 32 threads across a tile of 32 W-element chunks of l, 8 warps down the split's
// rows of k (warp w takes rows w, w + 8, ...). The warps' sums are added in warp order into
// partial[split, j, l]. W > 1 needs X's rows 16-byte aligned.
template <typename T, int W>
__global__ void __launch_bounds__(kThreads)
    column_kernel(const T* x, const T* s, SkinnyView v, int64_t split_rows, float* partial) {
  __shared__ float sums[kWarps][32 * W];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t l0 = (blockIdx.x * int64_t{32} + lane) * W;
  const int64_t begin = blockIdx.y * split_rows;
  const int64_t end = begin + split_rows < v.K ? begin + split_rows : v.K;
  float acc[kMaxS][W] = {};
  if (l0 < v.L) {
#pragma unroll 4
    for (int64_t k = begin + warp; k < end; k += kWarps) {
      float xv[W];
      load_floats<W>(x + k * v.L + l0, xv);
#pragma unroll
      for (int j = 0; j < kMaxS; ++j) {
        if (j >= v.s) break;
        const float sv = as_float(s[j * v.sj + k * v.sk]);
#pragma unroll
        for (int e = 0; e < W; ++e) acc[j][e] = fmaf(xv[e], sv, acc[j][e]);
      }
    }
  }
#pragma unroll
  for (int j = 0; j < kMaxS; ++j) {
    if (j >= v.s) break;
#pragma unroll
    for (int e = 0; e < W; ++e) sums[warp][lane * W + e] = acc[j][e];
    __syncthreads();
    if (threadIdx.x < 32 * W) {
      const int64_t l = blockIdx.x * int64_t{32 * W} + threadIdx.x;
      float total = 0;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) total += sums[w][threadIdx.x];
      if (l < v.L) partial[(blockIdx.y * int64_t{v.s} + j) * v.L + l] = total;
    }
    __syncthreads();
  }
}

// O[l, j] = alpha * (sum over splits of partial[split, j, l]) + beta * O: a block per 32 columns l of
// one j; warp w adds the splits w, w + 8, ... in order, then the 8 warp sums are added in warp order.
template <typename Out>
__global__ void __launch_bounds__(kThreads) finish_kernel(const float* partial, int64_t splits, SkinnyView v,
                                                         float alpha, float beta, Out* c) {
  __shared__ float sums[kWarps][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t groups = (v.L + 31) / 32;
  const int64_t j = blockIdx.x / groups, l = (blockIdx.x % groups) * 32 + lane;
  float acc = 0;
  if (l < v.L) {
    for (int64_t q = warp; q < splits; q += kWarps) acc += partial[(q * v.s + j) * v.L + l];
  }
  sums[warp][lane] = acc;
  __syncthreads();
  if (warp == 0 && l < v.L) {
    float total = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) total += sums[w][lane];
    store_result(c + l * v.cl + j * v.cj, total, alpha, beta);
  }
}

// C[i, j0 .. j0 + W) for a small k: a thread per W-element chunk of C's rows (grid-stride). W > 1
// needs W | n, C aligned to W * sizeof(Out) and, for an untransposed B, B 16-byte aligned.
template <typename T, typename Out, int W>
__global__ void __launch_bounds__(kThreads)
    small_k_kernel(const T* a, const T* b, SkinnyGemmArgs g, Out* c) {
  const int64_t per_row = g.n / W;
  const int64_t total = g.m * per_row;
  for (int64_t t = blockIdx.x * int64_t{kThreads} + threadIdx.x; t < total;
       t += int64_t{gridDim.x} * kThreads) {
    const int64_t i = t / per_row, j0 = (t % per_row) * W;
    float acc[W] = {};
    for (int64_t k = 0; k < g.k; ++k) {
      const float av = as_float(g.trans_a ? a[k * g.m + i] : a[i * g.k + k]);
      float bv[W];
      if (g.trans_b) {
#pragma unroll
        for (int e = 0; e < W; ++e) bv[e] = as_float(b[(j0 + e) * g.k + k]);
      } else {
        load_floats<W>(b + k * g.n + j0, bv);
      }
#pragma unroll
      for (int e = 0; e < W; ++e) acc[e] = fmaf(av, bv[e], acc[e]);
    }
    Out* out = c + i * g.n + j0;
    if constexpr (W == 1) {
      store_result(out, acc[0], g.alpha, g.beta);
    } else {
      float old[W] = {};
      if (g.beta != 0.0f) load_floats<W>(out, old);
#pragma unroll
      for (int e = 0; e < W; ++e) acc[e] = scaled(acc[e], g.alpha, g.beta, old[e]);
      store_floats<W>(out, acc);
    }
  }
}

// ---- Host side

template <typename T, typename Out>
void launch_dot(const SkinnyView& v, const T* x, const T* s, float alpha, float beta, Out* c,
                cudaStream_t stream) {
  constexpr int W = kChunkElems<T>;
  const bool vec_x = aligned(x, 16) && (v.K * sizeof(T)) % 16 == 0;
  const bool vec_s = vec_x && v.sk == 1 && aligned(s, 16) && (v.s == 1 || (v.sj * sizeof(T)) % 16 == 0);
  const unsigned blocks = static_cast<unsigned>(ceil_div(v.L, kWarps));
  if (vec_s) {
    dot_kernel<T, Out, W, true><<<blocks, kThreads, 0, stream>>>(x, s, v, alpha, beta, c);
  } else if (vec_x) {
    dot_kernel<T, Out, W, false><<<blocks, kThreads, 0, stream>>>(x, s, v, alpha, beta, c);
  } else {
    dot_kernel<T, Out, 1, false><<<blocks, kThreads, 0, stream>>>(x, s, v, alpha, beta, c);
  }
  CUDA_CHECK_LAUNCH();
}

template <typename T, typename Out>
void launch_column(const SkinnyView& v, ElemType ab, const T* x, const T* s, float alpha, float beta,
                   Out* c, float* partial, cudaStream_t stream) {
  constexpr int W = kChunkElems<T>;
  const int64_t split_rows = column_split_rows(v, ab);
  const int64_t splits = ceil_div(v.K, split_rows);
  const bool vec = aligned(x, 16) && (v.L * sizeof(T)) % 16 == 0;
  const dim3 grid(static_cast<unsigned>(ceil_div(vec ? v.L / W : v.L, 32)), static_cast<unsigned>(splits));
  if (vec) {
    column_kernel<T, W><<<grid, kThreads, 0, stream>>>(x, s, v, split_rows, partial);
  } else {
    column_kernel<T, 1><<<grid, kThreads, 0, stream>>>(x, s, v, split_rows, partial);
  }
  CUDA_CHECK_LAUNCH();
  const unsigned blocks = static_cast<unsigned>(v.s * ceil_div(v.L, 32));
  finish_kernel<Out><<<blocks, kThreads, 0, stream>>>(partial, splits, v, alpha, beta, c);
  CUDA_CHECK_LAUNCH();
}

template <typename T, typename Out>
void launch_small_k(const SkinnyGemmArgs& g, const T* a, const T* b, Out* c, cudaStream_t stream) {
  constexpr int W = kChunkElems<T>;
  const bool vec = g.n % W == 0 && aligned(c, W * sizeof(Out)) && (g.trans_b || aligned(b, 16));
  const int64_t threads = g.m * (vec ? g.n / W : g.n);
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(ceil_div(threads, kThreads), 1 << 20));
  if (vec) {
    small_k_kernel<T, Out, W><<<blocks, kThreads, 0, stream>>>(a, b, g, c);
  } else {
    small_k_kernel<T, Out, 1><<<blocks, kThreads, 0, stream>>>(a, b, g, c);
  }
  CUDA_CHECK_LAUNCH();
}

template <typename T, typename Out>
void launch_typed(const SkinnyGemmArgs& g, ElemType ab, const void* a, const void* b, void* c_raw,
                  void* scratch, cudaStream_t stream) {
  const T* ta = static_cast<const T*>(a);
  const T* tb = static_cast<const T*>(b);
  Out* c = static_cast<Out*>(c_raw);
  if (!uses_view(g)) {
    launch_small_k<T, Out>(g, ta, tb, c, stream);
    return;
  }
  const SkinnyView v = view_of(g);
  const T* x = v.x_is_a ? ta : tb;
  const T* s = v.x_is_a ? tb : ta;
  if (v.dot) {
    launch_dot<T, Out>(v, x, s, g.alpha, g.beta, c, stream);
  } else {
    launch_column<T, Out>(v, ab, x, s, g.alpha, g.beta, c, static_cast<float*>(scratch), stream);
  }
}

}  // namespace

bool skinny_gemm_applies(const SkinnyGemmArgs& g, ElemType ab, ElemType c) {
  const bool types = (ab == ElemType::kF32 && c == ElemType::kF32) ||
                     (ab == ElemType::kBF16 && (c == ElemType::kBF16 || c == ElemType::kF32));
  return types && g.m >= 1 && g.n >= 1 && g.k >= 1 &&
         (g.m <= kSkinnyMax || g.n <= kSkinnyMax || g.k <= kSkinnyMax);
}

size_t skinny_gemm_scratch_bytes(const SkinnyGemmArgs& g, ElemType ab) {
  if (!uses_view(g)) return 0;
  const SkinnyView v = view_of(g);
  if (v.dot) return 0;
  const int64_t splits = ceil_div(v.K, column_split_rows(v, ab));
  return static_cast<size_t>(splits * v.s * v.L) * sizeof(float);
}

void launch_skinny_gemm(const SkinnyGemmArgs& g, ElemType ab, ElemType c_type, const void* a, const void* b,
                        void* c, void* scratch, cudaStream_t stream) {
  if (ab == ElemType::kF32) {
    launch_typed<float, float>(g, ab, a, b, c, scratch, stream);
  } else if (c_type == ElemType::kBF16) {
    launch_typed<Bf16, Bf16>(g, ab, a, b, c, scratch, stream);
  } else {
    launch_typed<Bf16, float>(g, ab, a, b, c, scratch, stream);
  }
}

}  // namespace dtrn::cuda

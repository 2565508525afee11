// combine_paths and its backward (train_kernels.h; contracts in backend.h): one warp per work row
// (routed rows first, then bypassed ones), eight rows a block, reading and writing whole 16-byte packs
// of a row where the head size and the pointers allow. A block a row left each row's two dependent
// index loads (the token, then its p) alone in flight on a 128-thread block, 22 us for the forward at
// 16384 rows of 960 where its bytes need 11. dp's dot product is a warp reduction in a fixed order
// (Note [Deterministic reductions] in block_reduce.cuh).
#include "cuda/block_reduce.cuh"
#include "cuda/cuda_check.h"
#include "cuda/device_types.cuh"
#include "cuda/train_kernels.h"

namespace dtrn::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / 32;

template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T x[kVec];
};

// A work row's token and head geometry. y rows hold H*D values, v rows G*D; query head h reads KV
// head h / group.
struct PathGeometry {
  const int32_t* routed;
  const int32_t* bypass;
  int64_t r, hd, gd, d, group;
  __device__ int64_t token(int64_t j) const { return j < r ? routed[j] : bypass[j - r]; }
  __device__ int64_t kv_column(int64_t c) const { return (c / d / group) * d + c % d; }
};

template <typename T, int kVec>
__device__ __forceinline__ Pack<T, kVec> load(const T* p) {
  return *reinterpret_cast<const Pack<T, kVec>*>(p);
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads)
    combine_paths_kernel(const T* o, const T* v, const float* p, PathGeometry g, int64_t n, T* y) {
  const int lane = threadIdx.x & 31;
  const int64_t j = blockIdx.x * int64_t{kRowsPerBlock} + (threadIdx.x >> 5);
  if (j >= n) return;  // the whole warp
  const int64_t t = g.token(j);
  const bool routed = j < g.r;
  const float s = routed ? p[t] : 1.0f - p[t];
#pragma unroll 4
  for (int64_t c = int64_t{lane} * kVec; c < g.hd; c += 32 * kVec) {
    const Pack<T, kVec> in = load<T, kVec>(routed ? o + j * g.hd + c : v + t * g.gd + g.kv_column(c));
    Pack<T, kVec> out;
#pragma unroll
    for (int k = 0; k < kVec; ++k) out.x[k] = Converter<T, float>::run(s * Converter<float, T>::run(in.x[k]));
    *reinterpret_cast<Pack<T, kVec>*>(y + t * g.hd + c) = out;
  }
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads)
    combine_paths_backward_kernel(const T* o, const T* v, const float* p, PathGeometry g, int64_t n, const T* dy,
                                  T* d_o, T* dv, float* dp) {
  const int lane = threadIdx.x & 31;
  const int64_t j = blockIdx.x * int64_t{kRowsPerBlock} + (threadIdx.x >> 5);
  if (j >= n) return;  // the whole warp
  const int64_t t = g.token(j);
  const T* grad = dy + t * g.hd;
  float dot = 0.0f;
  if (j < g.r) {
    const float s = p[t];
#pragma unroll 4
    for (int64_t c = int64_t{lane} * kVec; c < g.hd; c += 32 * kVec) {
      const Pack<T, kVec> gy = load<T, kVec>(grad + c), x = load<T, kVec>(o + j * g.hd + c);
      Pack<T, kVec> out;
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        const float gk = Converter<float, T>::run(gy.x[k]);
        out.x[k] = Converter<T, float>::run(s * gk);
        dot += gk * Converter<float, T>::run(x.x[k]);
      }
      *reinterpret_cast<Pack<T, kVec>*>(d_o + j * g.hd + c) = out;
    }
    Pack<T, kVec> zero;
#pragma unroll
    for (int k = 0; k < kVec; ++k) zero.x[k] = Converter<T, float>::run(0.0f);
    for (int64_t e = int64_t{lane} * kVec; e < g.gd; e += 32 * kVec) {
      *reinterpret_cast<Pack<T, kVec>*>(dv + t * g.gd + e) = zero;
    }
  } else {
    const float s = 1.0f - p[t];
    for (int64_t e = int64_t{lane} * kVec; e < g.gd; e += 32 * kVec) {
      const int64_t first = (e / g.d) * g.group * g.d + e % g.d;  // the group's first query head, same column
      float sum[kVec] = {};
      for (int64_t h = 0; h < g.group; ++h) {
        const Pack<T, kVec> gy = load<T, kVec>(grad + first + h * g.d);
#pragma unroll
        for (int k = 0; k < kVec; ++k) sum[k] += Converter<float, T>::run(gy.x[k]);
      }
      const Pack<T, kVec> x = load<T, kVec>(v + t * g.gd + e);
      Pack<T, kVec> out;
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        out.x[k] = Converter<T, float>::run(s * sum[k]);
        dot += sum[k] * Converter<float, T>::run(x.x[k]);
      }
      *reinterpret_cast<Pack<T, kVec>*>(dv + t * g.gd + e) = out;
    }
    dot = -dot;
  }
  dot = warp_reduce(dot, Plus{});
  if (lane == 0) dp[t] = dot;
}

bool aligned16(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  }
  return true;
}

// Calls fn(T{}, std::integral_constant<int, kVec>{}) with 16-byte packs when every row offset and
// pointer allows them, else single elements.
template <typename Fn>
void dispatch_packs(ElemType type, int64_t d, std::initializer_list<const void*> ptrs, Fn&& fn) {
  const bool wide = aligned16(ptrs);
  if (type == ElemType::kBF16) {
    if (wide && d % 8 == 0) return fn(Bf16{}, std::integral_constant<int, 8>{});
    return fn(Bf16{}, std::integral_constant<int, 1>{});
  }
  if (wide && d % 4 == 0) return fn(float{}, std::integral_constant<int, 4>{});
  return fn(float{}, std::integral_constant<int, 1>{});
}

unsigned blocks_for(int64_t rows) { return static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock); }

PathGeometry geometry(const int32_t* routed, const int32_t* bypass, int64_t r, int64_t heads, int64_t hd,
                      int64_t gd) {
  const int64_t d = hd / heads;
  return PathGeometry{routed, bypass, r, hd, gd, d, heads * d / gd};
}

}  // namespace

void launch_combine_paths(const void* o, const void* v, const float* p, const int32_t* routed,
                          const int32_t* bypass, int64_t n, int64_t r, int64_t heads, int64_t hd, int64_t gd,
                          ElemType type, void* y, cudaStream_t stream) {
  if (n == 0) return;
  const PathGeometry g = geometry(routed, bypass, r, heads, hd, gd);
  dispatch_packs(type, g.d, {o, v, y}, [&](auto tag, auto vec) {
    using T = decltype(tag);
    combine_paths_kernel<T, decltype(vec)::value><<<blocks_for(n), kThreads, 0, stream>>>(
        static_cast<const T*>(o), static_cast<const T*>(v), p, g, n, static_cast<T*>(y));
  });
  CUDA_CHECK_LAUNCH();
}

void launch_combine_paths_backward(const void* o, const void* v, const float* p, const int32_t* routed,
                                   const int32_t* bypass, int64_t n, int64_t r, int64_t heads, int64_t hd,
                                   int64_t gd, ElemType type, const void* dy, void* d_o, void* dv, float* dp,
                                   cudaStream_t stream) {
  if (n == 0) return;
  const PathGeometry g = geometry(routed, bypass, r, heads, hd, gd);
  dispatch_packs(type, g.d, {o, v, dy, d_o, dv}, [&](auto tag, auto vec) {
    using T = decltype(tag);
    combine_paths_backward_kernel<T, decltype(vec)::value><<<blocks_for(n), kThreads, 0, stream>>>(
        static_cast<const T*>(o), static_cast<const T*>(v), p, g, n, static_cast<const T*>(dy), static_cast<T*>(d_o),
        static_cast<T*>(dv), dp);
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace dtrn::cuda

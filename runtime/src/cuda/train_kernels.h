// Launchers of the CUDA kernels behind a training step's bookkeeping: token routing (routing.cu) and a D
// block's two paths (routed_paths.cu),
// gradient accumulation and row scatter (accumulate.cu), and the multi-tensor optimizer (optimizer.cu).
// Raw device pointers and POD geometry, queued on `stream`, launches checked; cuda_backend_train.cc
// validates tensors and calls them. C++17, no Tensor (see elementwise.h).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/elementwise.h"

namespace dtrn::cuda {

// ---- routing.cu (contracts: backend.h, route_*)
void launch_route_threshold(const float* p, int64_t n, float threshold, int32_t* mask, cudaStream_t stream);
// order: i32 scratch of n elements.
void launch_route_fallback(int32_t* mask, int32_t* order, int64_t n, int64_t want, uint64_t seed,
                           uint64_t rng_stream, uint64_t offset, cudaStream_t stream);
void launch_route_compact(const int32_t* mask, int64_t rows, int64_t cols, int32_t* routed,
                          int32_t* positions, int32_t* bypass, int32_t* cu_seqlens, int32_t* count,
                          cudaStream_t stream);
// The scratch bytes launch_sort_values needs for n keys.
size_t sort_values_scratch_bytes(int64_t n);
void launch_sort_values(const float* keys, float* sorted, int32_t* order, int64_t n, void* scratch,
                        size_t scratch_bytes, cudaStream_t stream);

// ---- routed_paths.cu (contracts: backend.h, combine_paths*). o [r, hd], v [n, gd], y and dy [n, hd] of
// `type` (f32 or bf16); p and dp f32 [n]; routed [r] and bypass [n - r].
void launch_combine_paths(const void* o, const void* v, const float* p, const int32_t* routed,
                          const int32_t* bypass, int64_t n, int64_t r, int64_t heads, int64_t hd, int64_t gd,
                          ElemType type, void* y, cudaStream_t stream);
void launch_combine_paths_backward(const void* o, const void* v, const float* p, const int32_t* routed,
                                   const int32_t* bypass, int64_t n, int64_t r, int64_t heads, int64_t hd,
                                   int64_t gd, ElemType type, const void* dy, void* d_o, void* dv, float* dp,
                                   cudaStream_t stream);

// ---- accumulate.cu
// dst[i] += src[i], src converted to dst's type; dst f64, f32 or bf16, src any floating type.
void launch_add_into(void* dst, ElemType dst_type, const void* src, ElemType src_type, int64_t n,
                     cudaStream_t stream);
// out [outer, n, inner] rows index[j] = src [outer, m, inner] rows j; elem_bytes 2, 4 or 8.
void launch_index_copy(void* out, const void* src, const void* index, bool index_i64, int64_t outer,
                       int64_t n, int64_t m, int64_t inner, int elem_bytes, cudaStream_t stream);

// ---- optimizer.cu
// One parameter of the multi-tensor update, as the device reads it.
struct AdamWSlot {
  float* param;
  const float* grad;
  float* m;
  float* v;
  uint16_t* compute;  // bf16 copy rewritten from param, or null
  int64_t n;
  double weight_decay;
};
// A piece of one slot's elements handled by one thread block.
struct TensorChunk {
  int32_t slot;
  int64_t begin, end;
};
constexpr int64_t kOptimizerChunk = 65536;

struct AdamWHyper {
  double lr, beta1, beta2, eps, bias_correction1, bias_correction2;
  double max_norm;  // <= 0: no clipping
};

// partial [chunks] f64 scratch; out [1] f64 = sum over every chunk of sum of squares of its grads, in a
// fixed order.
void launch_sum_squares_multi(const AdamWSlot* slots, const TensorChunk* chunks, int64_t num_chunks,
                              double* partial, double* out, cudaStream_t stream);
void launch_adamw_multi(const AdamWSlot* slots, const TensorChunk* chunks, int64_t num_chunks,
                        AdamWHyper hyper, const double* norm_sq, cudaStream_t stream);

}  // namespace dtrn::cuda

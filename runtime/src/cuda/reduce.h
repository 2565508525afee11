// Launchers of the CUDA backend's reductions (reduce.cu): the sum over the middle of an
// [outer, n, inner] view and the sum of squares. Both accumulate in double and are deterministic
// (Note [Deterministic reductions] in block_reduce.cuh); long reductions run in two passes through a
// caller-provided scratch buffer of device memory whose size the *_scratch_* functions give.
//
// C++17 and free of dtrn::Tensor, like elementwise.h. Every launcher checks its launches.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "cuda/elementwise.h"

namespace dtrn::cuda {

// Bytes of scratch launch_sum_dim needs for this shape (0: one pass, scratch may be null).
size_t sum_dim_scratch_bytes(int64_t outer, int64_t n, int64_t inner);
// out[o, i] = sum over j < n of x[o, j, i], rounded once to `type` (f64, f32 or bf16); n >= 1.
void launch_sum_dim(ElemType type, const void* x, int64_t outer, int64_t n, int64_t inner, void* out,
                    void* scratch, cudaStream_t stream);

// Doubles of scratch launch_sum_squares needs for n elements.
int64_t sum_squares_scratch_doubles(int64_t n);
// *result (device memory) = sum of x[i]^2 over n >= 1 elements, in double.
void launch_sum_squares(ElemType type, const void* x, int64_t n, double* scratch, double* result,
                        cudaStream_t stream);

}  // namespace dtrn::cuda

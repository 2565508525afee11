// Launchers of the CUDA backend's RMSNorm (rmsnorm.cu) and rotary position embedding (rope.cu), for
// f64, f32 and bf16 data; formulas as in cpu/norm.cc. RMSNorm's per-row statistics (rstd) are f32 for
// f32 and bf16 data, f64 for f64.
//
// C++17 and free of dtrn::Tensor, like elementwise.h. Every launcher checks its launches.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "cuda/elementwise.h"

namespace dtrn::cuda {

// x [rows, cols], w [cols] -> y [rows, cols], rstd [rows].
void launch_rmsnorm(ElemType type, const void* x, const void* w, double eps, int64_t rows,
                    int64_t cols, void* y, void* rstd, cudaStream_t stream);

// Bytes of scratch launch_rmsnorm_backward needs (0: none).
size_t rmsnorm_backward_scratch_bytes(int64_t rows, int64_t cols);
// dx [rows, cols] and dw [cols] written (not accumulated). dw is a deterministic two-pass column sum
// (Note [Deterministic reductions] in block_reduce.cuh).
void launch_rmsnorm_backward(ElemType type, const void* x, const void* w, const void* rstd,
                             const void* dy, int64_t rows, int64_t cols, void* dx, void* dw,
                             void* scratch, cudaStream_t stream);

// x, out [n, heads, dim] (dim even); positions [n] i32 or i64. inverse rotates by minus the angle.
void launch_rope(ElemType type, const void* x, const void* positions, ElemType position_type,
                 double theta, bool inverse, int64_t n, int64_t heads, int64_t dim, void* out,
                 cudaStream_t stream);

}  // namespace dtrn::cuda

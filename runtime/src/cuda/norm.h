// Launchers of the CUDA backend's RMSNorm, alone and fused with the residual add before it
// (rmsnorm.cu), and of rotary position embedding (rope.cu), for f64, f32 and bf16 data; formulas as
// in cpu/norm.cc. RMSNorm's per-row statistics (rstd) are f32 for f32 and bf16 data, f64 for f64.
// The fused launchers give the bits of launch_binary's add and the plain launchers whenever they
// take the same chunk width: every row pointer 16-byte aligned (fresh tensors are), or none.
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

// h = x + delta rounded as launch_binary's add, then launch_rmsnorm of h: x, delta, h, y [rows, cols].
void launch_add_rmsnorm(ElemType type, const void* x, const void* delta, const void* w, double eps,
                        int64_t rows, int64_t cols, void* h, void* y, void* rstd, cudaStream_t stream);

// Bytes of scratch launch_rmsnorm_backward and launch_add_rmsnorm_backward need: the per-block
// partial column sums of dw, in double (0 for an empty problem).
size_t rmsnorm_backward_scratch_bytes(int64_t rows, int64_t cols);
// dx [rows, cols] and dw [cols] written (not accumulated). dw is a deterministic two-pass column sum
// (Note [Deterministic reductions] in block_reduce.cuh) whose first pass is the dx kernel itself
// for rows of up to 2048 bf16, 1024 f32 or 512 f64 elements (256 when not 16-byte aligned).
void launch_rmsnorm_backward(ElemType type, const void* x, const void* w, const void* rstd,
                             const void* dy, int64_t rows, int64_t cols, void* dx, void* dw,
                             void* scratch, cudaStream_t stream);
// dx = dh + launch_rmsnorm_backward's dx of (h, dy), that rounded to the type first and the sum
// rounded as launch_binary's add; dw as launch_rmsnorm_backward's. One pass over the rows for dx.
void launch_add_rmsnorm_backward(ElemType type, const void* h, const void* w, const void* rstd,
                                 const void* dy, const void* dh, int64_t rows, int64_t cols, void* dx,
                                 void* dw, void* scratch, cudaStream_t stream);

// table [positions, dim / 2] of double (cos, sin) pairs: row p holds position p's angles (Note
// [RoPE's table] in rope.cu).
void launch_rope_table(double theta, int64_t positions, int64_t dim, void* table, cudaStream_t stream);

// x, out [n, heads, dim] (dim even); positions [n] i32 or i64, those below table_rows read from
// `table` (launch_rope_table's for the same theta and dim; may be null), the others formed in place.
// inverse rotates by minus the angle.
void launch_rope(ElemType type, const void* x, const void* positions, ElemType position_type,
                 const void* table, int64_t table_rows, double theta, bool inverse, int64_t n,
                 int64_t heads, int64_t dim, void* out, cudaStream_t stream);

}  // namespace dtrn::cuda

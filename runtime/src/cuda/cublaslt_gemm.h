// Matrix products on the GPU through cuBLASLt: the CUDA backend's gemm (backend.h: GemmArgs, row-major,
// batched with strides, stride 0 shares one matrix).
//
// Note [Row-major through a column-major library]
// cuBLASLt reads column-major matrices. A row-major R x C matrix with leading dimension C is, byte for
// byte, the column-major C x R matrix of its transpose. So the row-major C = op(A) op(B) is computed as the
// column-major C^T = op(B)^T op(A)^T: cuBLASLt's first operand is dtrn's B, its second is dtrn's A, with
// the same transpose flags, and its m, n are dtrn's n, m. No data moves.
//
// Precision: f32 inputs use CUBLAS_COMPUTE_32F (true fp32 products; TF32 is never allowed, so results
// track the CPU's fp32 BLAS to ~1e-6 relative and tests can hold tight tolerances). bf16 inputs produce
// bf16 (or f32) with fp32 accumulation and fp32 alpha/beta. f64 uses CUBLAS_COMPUTE_64F.
//
// Plans (descriptors, layouts and the chosen algorithm) are cached per (device, dtype, shape, strides,
// transposes, operand alignment): making one queries the heuristic and times its candidates once (Note
// [Choosing among cuBLASLt's candidates] in the .cc), a cache hit is a map lookup. Thread-safe.
#pragma once

#include "backend.h"

namespace dtrn::cuda {

// Queues C = alpha op(A) op(B) + beta C on `device`'s stream. a and b are device pointers of `dtype`
// (f64, f32 or bf16), c of c_dtype: the same, or f32 for bf16 inputs (a weight gradient accumulated
// into its f32 buffer with beta = 1, without a bf16 intermediate). c_in, when given, is read as the
// product's C in place of c (same layout and dtype): D = alpha op(A) op(B) + beta c_in is written to c.
void cublaslt_gemm(const GemmArgs& args, DType dtype, DType c_dtype, const void* a, const void* b, void* c,
                   int device, const void* c_in = nullptr);

}  // namespace dtrn::cuda

// Matrix products with one dimension of at most kSkinnyMax, without cuBLASLt (skinny_gemm.cu): the
// router's last linear layer (2 logits) and its gradients. cuBLASLt serves such shapes with generic
// align-1 kernels that take several times the time of reading the operands once; these kernels read
// each operand element once, with 16-byte loads where the pointers and row lengths allow.
//
// Semantics are GemmArgs' (backend.h) for one matrix (batch 1), row-major:
//   C[m, n] = alpha * op(A)[m, k] op(B)[k, n] + beta * C   (C is not read when beta == 0)
// A and B are f32 or bf16; C is their dtype, or f32 for bf16 A and B. Products accumulate in f32 and
// round once to C's dtype. Deterministic: no atomics; a long reduction is split over blocks by the shape
// alone and the partial sums are added in a fixed order (Note [Deterministic reductions] in
// block_reduce.cuh), so the same shape on the same GPU model always gives the same bits.
//
// C++17 and free of dtrn::Tensor, like elementwise.h. The launcher checks its launches.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "cuda/elementwise.h"

namespace dtrn::cuda {

constexpr int64_t kSkinnyMax = 8;

struct SkinnyGemmArgs {
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  float alpha = 1, beta = 0;
};

// True when launch_skinny_gemm serves this product: f32 or bf16 operands, k >= 1, and m, n or k at most
// kSkinnyMax (a small k is the router's input gradient, [N, 2] x [2, R]).
bool skinny_gemm_applies(const SkinnyGemmArgs& args, ElemType ab, ElemType c);

// Bytes of device scratch launch_skinny_gemm needs for this product (0: none; scratch may be null).
size_t skinny_gemm_scratch_bytes(const SkinnyGemmArgs& args, ElemType ab);

// Queues C = alpha op(A) op(B) + beta C on `stream`. a, b, c are device pointers (any alignment);
// scratch holds skinny_gemm_scratch_bytes and must stay allocated until the work has run.
void launch_skinny_gemm(const SkinnyGemmArgs& args, ElemType ab, ElemType c_type, const void* a,
                        const void* b, void* c, void* scratch, cudaStream_t stream);

}  // namespace dtrn::cuda

// Launchers of the CUDA backend's softmax over the last dimension (softmax.cu) and cross-entropy over
// a padded vocabulary (cross_entropy.cu), for f64, f32 and bf16 data; formulas as in cpu/softmax.cc.
// Per-row statistics (losses, lse) are f32 for f32 and bf16 logits, f64 for f64. Row sums accumulate
// in double and every row is reduced in a fixed order (deterministic).
//
// C++17 and free of dtrn::Tensor, like elementwise.h. Every launcher checks its launches.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/elementwise.h"

namespace dtrn::cuda {

// x, y [rows, cols].
void launch_softmax(ElemType type, const void* x, int64_t rows, int64_t cols, void* y,
                    cudaStream_t stream);
// dx = y * (dy - sum(dy * y)) per row.
void launch_softmax_backward(ElemType type, const void* y, const void* dy, int64_t rows,
                             int64_t cols, void* dx, cudaStream_t stream);

// logits [rows, cols]; targets [rows] (i32 or i64), each ignore_index or in [0, num_classes);
// only the first num_classes columns take part.
struct CrossEntropyArgs {
  int64_t rows = 0, cols = 0, num_classes = 0, ignore_index = 0;
  const void* targets = nullptr;
  ElemType target_type = ElemType::kI64;
};

// losses[r] = lse[r] - logits[r, t], lse[r] = log sum exp of the row's classes; both 0 on ignored rows.
void launch_cross_entropy(ElemType type, const void* logits, const CrossEntropyArgs& args,
                          void* losses, void* lse, cudaStream_t stream);
// dlogits = grad[0] * scale * (softmax - onehot) on kept rows, 0 on ignored rows and padded classes.
// grad: one f32 or f64 element in device memory (read by the kernel, no host synchronisation).
void launch_cross_entropy_backward(ElemType type, const void* logits, const CrossEntropyArgs& args,
                                   const void* lse, const void* grad, ElemType grad_type,
                                   double scale, void* dlogits, cudaStream_t stream);
// launch_cross_entropy and launch_cross_entropy_backward (with grad 1) in one pass; dlogits may equal
// logits (in place).
void launch_cross_entropy_fused(ElemType type, const void* logits, const CrossEntropyArgs& args,
                                double scale, void* losses, void* lse, void* dlogits,
                                cudaStream_t stream);

}  // namespace dtrn::cuda

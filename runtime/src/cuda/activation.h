// Launchers of the CUDA backend's pointwise training kernels (activation.cu): affine, SiLU, SwiGLU and
// their backwards over n contiguous elements, for f64, f32 and bf16 (bf16 computes in f32 and rounds
// once). Formulas and argument order are backend.h's; cuda_backend_nn.cc validates the tensors. Any
// output may alias the input at the same position (affine runs in place for gradient clipping).
//
// C++17 and free of dtrn::Tensor, like elementwise.h. Every launcher checks its launch.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/elementwise.h"

namespace dtrn::cuda {

// out = alpha * x + beta, alpha and beta first rounded to the compute type (as the CPU does).
void launch_affine(ElemType type, const void* x, double alpha, double beta, void* out, int64_t n,
                   cudaStream_t stream);
void launch_silu(ElemType type, const void* x, void* out, int64_t n, cudaStream_t stream);
// The backwards also write the activation (silu / swiglu's bits) into out unless it is null.
void launch_silu_backward(ElemType type, const void* x, const void* grad, void* dx, void* out,
                          int64_t n, cudaStream_t stream);
void launch_swiglu(ElemType type, const void* gate, const void* up, void* out, int64_t n,
                   cudaStream_t stream);
void launch_swiglu_backward(ElemType type, const void* gate, const void* up, const void* grad,
                            void* dgate, void* dup, void* out, int64_t n, cudaStream_t stream);

}  // namespace dtrn::cuda

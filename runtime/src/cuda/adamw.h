// Launcher of the CUDA backend's AdamW update (adamw.cu); the formula is optim.h's and the CPU's
// (cpu/adamw.cc), evaluated in double per element and rounded once per stored value.
//
// C++17 and free of dtrn::Tensor, like elementwise.h; the launcher checks its launch.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/elementwise.h"

namespace dtrn::cuda {

// backend.h's AdamWArgs, mirrored here because that header is C++20.
struct AdamWHyper {
  double lr, beta1, beta2, eps, weight_decay;
  double bias_correction1, bias_correction2;  // 1 - beta^t
};

// One in-place update of n elements: param and grad of `type` (f64, f32 or bf16), moments m and v in
// f64 for f64 parameters and f32 otherwise.
void launch_adamw(ElemType type, void* param, const void* grad, void* m, void* v, int64_t n,
                  const AdamWHyper& h, cudaStream_t stream);

}  // namespace dtrn::cuda

// The CUDA backend: device memory from the caching allocator, host<->device copies, and the kernels of
// backend.h that exist on the GPU so far (fill, strided converting copy, random fill, binary elementwise,
// gemm through cuBLASLt, packed causal attention). Every other kernel inherits the loud default of backend.h.
//
// Each kernel runs on the device of its tensors, queued on that device's one stream (Note [One stream
// per device] in cuda_context.h); kernels return once the work is queued, except the host copies, which
// return once the bytes have arrived. Floating kernels accept f64, f32 and bf16 (bf16 computes in f32).
//
// The class is host code (C++20, sees Tensor); the device code lives in the .cu files behind
// elementwise.h and in cuBLASLt behind cublaslt_gemm.h.
#pragma once

#include "backend.h"

namespace dtrn {

class CudaBackend final : public Backend {
 public:
  const char* name() const override { return "cuda"; }
  // Serves the calling thread's current CUDA device (see caching_allocator.h).
  Allocator& allocator() override;

  void fill(const Tensor& out, double value) override;
  void copy(const Tensor& src, const Tensor& dst) override;
  void copy_from_host(void* dst, const void* src, size_t nbytes) override;
  void copy_to_host(void* dst, const void* src, size_t nbytes) override;
  void fill_random(const Tensor& out, bool normal, double a, double b, uint64_t seed, uint64_t stream,
                   uint64_t offset) override;

  void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) override;

  void gemm(const GemmArgs& args, const Tensor& a, const Tensor& b, const Tensor& c) override;

  // Defined in cuda_backend_attention.cc (kernels behind cuda/attention.h).
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cu_seqlens,
                 double scale, const Tensor& out, const Tensor& lse) override;
  void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cu_seqlens,
                          double scale, const Tensor& out, const Tensor& lse, const Tensor& dout,
                          const Tensor& dq, const Tensor& dk, const Tensor& dv) override;
};

CudaBackend& cuda_backend();

}  // namespace dtrn

// The CUDA backend: device memory from the caching allocator, host<->device copies, and the kernels of
// backend.h that exist on the GPU so far (fill, strided converting copy, random fill, binary elementwise,
// gemm through cuBLASLt, and the training kernels below). Every other kernel inherits the loud default
// of backend.h.

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
  Allocator* pinned_host_allocator() override;  // pinned_host_allocator.cc

  void fill(const Tensor& out, double value) override;
  void copy(const Tensor& src, const Tensor& dst) override;
  void copy_from_host(void* dst, const void* src, size_t nbytes) override;
  void copy_to_host(void* dst, const void* src, size_t nbytes) override;
  void fill_random(const Tensor& out, bool normal, double a, double b, uint64_t seed, uint64_t stream,
                   uint64_t offset) override;

  void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) override;

  void gemm(const GemmArgs& args, const Tensor& a, const Tensor& b, const Tensor& c) override;
  void gemm_add(const GemmArgs& args, const Tensor& a, const Tensor& b, const Tensor& residual,
                const Tensor& c) override;

  // cuda_backend_train.cc
  void sum_squares_multi(const std::vector<Tensor>& tensors, const Tensor& out) override;
  void adamw_multi(const std::vector<AdamWTensors>& entries, const AdamWArgs& args, const Tensor& norm_sq,
                   double max_norm) override;
  void add_into(const Tensor& dst, const Tensor& src) override;
  void index_copy(const Tensor& out, int64_t outer, int64_t n, int64_t inner, const Tensor& index,
                  const Tensor& src) override;
  void route_threshold(const Tensor& p, double threshold, const Tensor& mask) override;
  void route_fallback(const Tensor& mask, int64_t want, uint64_t seed, uint64_t stream,
                      uint64_t offset) override;
  void combine_paths(const Tensor& o, const Tensor& v, const Tensor& p, const Tensor& routed, const Tensor& bypass,
                     int64_t heads, const Tensor& y) override;
  void combine_paths_backward(const Tensor& o, const Tensor& v, const Tensor& p, const Tensor& routed,
                              const Tensor& bypass, int64_t heads, const Tensor& dy, const Tensor& d_o,
                              const Tensor& dv, const Tensor& dp) override;
  void route_compact(const Tensor& mask, int64_t rows, int64_t cols, const Tensor& routed,
                     const Tensor& positions, const Tensor& bypass, const Tensor& cu_seqlens,
                     const Tensor& count) override;
  void sort_values(const Tensor& keys, const Tensor& sorted, const Tensor& order) override;

  // ---- Training kernels, defined in cuda_backend_elementwise.cc, cuda_backend_reduce_index.cc and
  // cuda_backend_nn.cc (device code behind activation.h, reduce.h, index.h, norm.h, softmax.h).
  // Reductions are deterministic (Note [Deterministic reductions] in block_reduce.cuh).
  void affine(const Tensor& x, double alpha, double beta, const Tensor& out) override;
  void silu(const Tensor& x, const Tensor& out) override;
  void silu_backward(const Tensor& x, const Tensor& grad, const Tensor& dx,
                     const Tensor& out) override;
  void swiglu(const Tensor& gate, const Tensor& up, const Tensor& out) override;
  void swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& grad, const Tensor& dgate,
                       const Tensor& dup, const Tensor& out) override;

  void sum_dim(const Tensor& x, int64_t outer, int64_t n, int64_t inner, const Tensor& out) override;
  // Synchronises with the device to return the value.
  double sum_squares(const Tensor& x) override;
  void index_select(const Tensor& x, int64_t outer, int64_t n, int64_t inner, const Tensor& index,
                    const Tensor& out) override;
  void index_add(const Tensor& out, int64_t outer, int64_t n, int64_t inner, const Tensor& index,
                 const Tensor& src) override;

  void rmsnorm(const Tensor& x, const Tensor& w, double eps, const Tensor& y,
               const Tensor& rstd) override;
  void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy,
                        const Tensor& dx, const Tensor& dw) override;
  void add_rmsnorm(const Tensor& x, const Tensor& delta, const Tensor& w, double eps, const Tensor& h,
                   const Tensor& y, const Tensor& rstd) override;
  void add_rmsnorm_backward(const Tensor& h, const Tensor& w, const Tensor& rstd, const Tensor& dy,
                            const Tensor& dh, const Tensor& dx, const Tensor& dw) override;
  void rope(const Tensor& x, const Tensor& positions, double theta, bool inverse,
            const Tensor& out) override;
  void softmax(const Tensor& x, const Tensor& y) override;
  void softmax_backward(const Tensor& y, const Tensor& dy, const Tensor& dx) override;
  void cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                     int64_t num_classes, const Tensor& losses, const Tensor& lse) override;
  void cross_entropy_backward(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                              int64_t num_classes, const Tensor& lse, const Tensor& grad,
                              double scale, const Tensor& dlogits) override;
  void cross_entropy_fused(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                           int64_t num_classes, double scale, const Tensor& losses,
                           const Tensor& lse, const Tensor& dlogits) override;

  // Defined in cuda_backend_attention.cc (kernels behind cuda/attention.h).
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cu_seqlens,
                 double scale, const Tensor& out, const Tensor& lse) override;
  void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cu_seqlens,
                          double scale, const Tensor& out, const Tensor& lse, const Tensor& dout,
                          const Tensor& dq, const Tensor& dk, const Tensor& dv) override;
};

CudaBackend& cuda_backend();

}  // namespace dtrn

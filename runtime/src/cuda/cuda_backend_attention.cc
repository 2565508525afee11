// CudaBackend::attention and attention_backward (backend.h): tensor checks, the kernel choices of
// DTRN_ATTENTION_KERNEL and DTRN_ATTENTION_BACKWARD, and the calls into the launchers of
// cuda/attention.h. Kept apart from cuda_backend.cc so that the attention kernels and the rest of the
// backend change independently.
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>

#include "cuda/attention.h"
#include "cuda/cuda_backend.h"
#include "cuda/cuda_context.h"

namespace dtrn {
namespace {

// Read on every call (a getenv per attention call is noise next to the kernels), so a test or an A/B run
// can switch paths within one process.
cuda::AttentionKernel attention_kernel_choice() {
  const char* value = std::getenv("DTRN_ATTENTION_KERNEL");
  if (value == nullptr || *value == '\0' || std::strcmp(value, "auto") == 0) {
    return cuda::AttentionKernel::kAuto;
  }
  if (std::strcmp(value, "wgmma") == 0) return cuda::AttentionKernel::kWgmma;
  if (std::strcmp(value, "mma") == 0) return cuda::AttentionKernel::kMma;
  DTRN_CHECK(std::strcmp(value, "generic") == 0,
             "DTRN_ATTENTION_KERNEL must be auto, mma, generic or wgmma, got '", value, "'");
  return cuda::AttentionKernel::kGeneric;
}

cuda::AttentionBackward attention_backward_choice() {
  const char* value = std::getenv("DTRN_ATTENTION_BACKWARD");
  if (value == nullptr || *value == '\0' || std::strcmp(value, "auto") == 0) {
    return cuda::AttentionBackward::kAuto;
  }
  if (std::strcmp(value, "split") == 0) return cuda::AttentionBackward::kSplit;
  if (std::strcmp(value, "wgmma") == 0) return cuda::AttentionBackward::kWgmma;
  if (std::strcmp(value, "wgmma-fused") == 0) return cuda::AttentionBackward::kWgmmaFused;
  DTRN_CHECK(std::strcmp(value, "fused") == 0,
             "DTRN_ATTENTION_BACKWARD must be auto, split, fused, wgmma or wgmma-fused, got '", value,
             "'");
  return cuda::AttentionBackward::kFused;
}

// The one CUDA device of all the tensors, which must be contiguous.
int attention_device(std::initializer_list<const Tensor*> tensors) {
  const int device = (*tensors.begin())->device().index;
  for (const Tensor* t : tensors) {
    DTRN_ASSERT(t->device().is_cuda() && t->device().index == device && t->is_contiguous(),
                "CUDA attention given ", t->describe(), " (cuda:", device, " contiguous expected)");
  }
  return device;
}

cuda::AttentionShape attention_shape(const Tensor& q, const Tensor& k, const Tensor& cu_seqlens,
                                     double scale, const char* kernel) {
  const int64_t n = q.size(0), h = q.size(1), d = q.size(2), g = k.size(1);
  DTRN_ASSERT(k.size(0) == n && k.size(2) == d && g > 0 && h % g == 0 && cu_seqlens.numel() >= 1 &&
                  cu_seqlens.dtype() == DType::kI32,
              kernel, ": q ", q.describe(), ", k ", k.describe(), ", cu_seqlens ",
              cu_seqlens.describe());
  DTRN_CHECK(q.dtype() == DType::kF32 || q.dtype() == DType::kBF16 || q.dtype() == DType::kF64, kernel,
             ": the CUDA backend computes in f32, bf16 or f64, got ", dtype_name(q.dtype()));
  DTRN_CHECK(d <= cuda::kAttentionMaxHeadDim, kernel, ": the CUDA kernels serve head dims up to ",
             cuda::kAttentionMaxHeadDim, ", got q ", q.describe());
  // Heads index the grid's y dimension; sequences and rows the x dimension and 32-bit tile indices.
  DTRN_CHECK(h <= 65535, kernel, ": the CUDA kernels serve at most 65535 heads, got q ", q.describe());
  DTRN_CHECK(n + cu_seqlens.numel() < std::numeric_limits<int32_t>::max(), kernel,
             ": too many rows or sequences for the CUDA kernels: q ", q.describe(), ", cu_seqlens ",
             cu_seqlens.describe());
  cuda::AttentionShape shape;
  shape.n = n;
  shape.h = static_cast<int>(h);
  shape.g = static_cast<int>(g);
  shape.d = static_cast<int>(d);
  shape.num_seqs = static_cast<int>(cu_seqlens.numel() - 1);
  shape.scale = scale;
  return shape;
}

DType stats_dtype(DType dtype) { return dtype == DType::kF64 ? DType::kF64 : DType::kF32; }

cuda::ElemType elem_type(DType dtype) { return static_cast<cuda::ElemType>(dtype); }

}  // namespace

void CudaBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v,
                            const Tensor& cu_seqlens, double scale, const Tensor& out,
                            const Tensor& lse) {
  const cuda::AttentionShape shape = attention_shape(q, k, cu_seqlens, scale, "attention");
  DTRN_ASSERT(v.shape() == k.shape() && out.shape() == q.shape() && lse.numel() == q.size(1) * q.size(0) &&
                  k.dtype() == q.dtype() && v.dtype() == q.dtype() && out.dtype() == q.dtype() &&
                  lse.dtype() == stats_dtype(q.dtype()),
              "attention: q ", q.describe(), ", k ", k.describe(), ", v ", v.describe(), ", out ",
              out.describe(), ", lse ", lse.describe());
  const int device = attention_device({&q, &k, &v, &cu_seqlens, &out, &lse});
  cuda::DeviceGuard guard(device);
  cuda::launch_attention_forward(elem_type(q.dtype()), shape, attention_kernel_choice(), q.raw_data(),
                                 k.raw_data(), v.raw_data(), cu_seqlens.data<int32_t>(),
                                 out.raw_data(), lse.raw_data(), cuda::stream_for(device));
}

void CudaBackend::attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                     const Tensor& cu_seqlens, double scale, const Tensor& out,
                                     const Tensor& lse, const Tensor& dout, const Tensor& dq,
                                     const Tensor& dk, const Tensor& dv) {
  const cuda::AttentionShape shape = attention_shape(q, k, cu_seqlens, scale, "attention_backward");
  const DType t = q.dtype();
  DTRN_ASSERT(v.shape() == k.shape() && out.shape() == q.shape() && dout.shape() == q.shape() &&
                  dq.shape() == q.shape() && dk.shape() == k.shape() && dv.shape() == k.shape() &&
                  lse.numel() == q.size(1) * q.size(0) && k.dtype() == t && v.dtype() == t &&
                  out.dtype() == t && dout.dtype() == t && dq.dtype() == t && dk.dtype() == t &&
                  dv.dtype() == t && lse.dtype() == stats_dtype(t),
              "attention_backward: q ", q.describe(), ", k ", k.describe(), ", dout ",
              dout.describe(), ", lse ", lse.describe(), ", dk ", dk.describe());
  const int device =
      attention_device({&q, &k, &v, &cu_seqlens, &out, &lse, &dout, &dq, &dk, &dv});
  cuda::DeviceGuard guard(device);
  const cuda::AttentionKernel kernel = attention_kernel_choice();
  const cuda::AttentionBackward backward = attention_backward_choice();
  // Scratch for delta = rowsum(dout * out) and the fused backward's workspace (f32 words); freed at
  // once, which the one stream makes safe (Note [One stream per device]).
  Tensor delta = Tensor::empty({q.size(1), q.size(0)}, lse.dtype(), q.device());
  const size_t workspace_bytes =
      cuda::attention_backward_workspace_bytes(elem_type(t), shape, kernel, backward);
  Tensor workspace;
  if (workspace_bytes > 0) {
    const auto words = static_cast<int64_t>((workspace_bytes + sizeof(float) - 1) / sizeof(float));
    workspace = Tensor::empty({words}, DType::kF32, q.device());
  }
  cuda::launch_attention_backward(elem_type(t), shape, kernel, backward, q.raw_data(), k.raw_data(),
                                  v.raw_data(), cu_seqlens.data<int32_t>(), out.raw_data(),
                                  lse.raw_data(), dout.raw_data(), delta.raw_data(),
                                  workspace_bytes > 0 ? workspace.raw_data() : nullptr,
                                  dq.raw_data(), dk.raw_data(), dv.raw_data(),
                                  cuda::stream_for(device));
}

}  // namespace dtrn

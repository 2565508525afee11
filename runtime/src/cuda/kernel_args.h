// Host-side helpers of the CUDA backend's kernel wrappers (cuda_backend_*.cc): the launchers' element
// type of a dtype, the GPU a set of tensors lives on, dtype and layout assertions, scratch memory, and
// the device and stream a kernel is queued on. The op layer has validated shapes (backend.h), so a
// failure here is a broken dtrn invariant (DTRN_ASSERT) except for the dtype checks, which name the
// kernel for a caller who passed a dtype the GPU does not compute in.
#pragma once

#include <cuda_runtime_api.h>

#include <initializer_list>

#include "cuda/cuda_context.h"
#include "cuda/elementwise.h"
#include "dtrn/runtime/tensor.h"

namespace dtrn::cuda {

// ElemType mirrors DType value for value (static_asserted in cuda_backend.cc).
inline ElemType elem_type_of(DType dtype) { return static_cast<ElemType>(dtype); }

// The one GPU every tensor lives on; asserts they are contiguous CUDA tensors of one device.
inline int device_of_all(const char* kernel, std::initializer_list<const Tensor*> tensors) {
  const Tensor& first = **tensors.begin();
  DTRN_ASSERT(first.device().is_cuda(), kernel, ": CUDA kernel given ", first.describe());
  for (const Tensor* t : tensors) {
    DTRN_ASSERT(t->device() == first.device() && t->is_contiguous(), kernel, ": expects contiguous ",
                "tensors on ", first.device().str(), ", got ", t->describe());
  }
  return first.device().index;
}

// f32, bf16 or f64 data, and every other tensor of the same dtype.
inline void check_compute_dtype(const char* kernel, const Tensor& data,
                                std::initializer_list<const Tensor*> same = {}) {
  const DType d = data.dtype();
  DTRN_CHECK(d == DType::kF32 || d == DType::kBF16 || d == DType::kF64, kernel,
             ": the CUDA backend computes in f32, bf16 or f64, got ", data.describe());
  for (const Tensor* t : same) {
    DTRN_ASSERT(t->dtype() == d, kernel, ": dtypes differ: ", data.describe(), " vs ", t->describe());
  }
}

// Per-row statistics (rstd, lse, losses) of data of this dtype: f64 for f64, f32 otherwise.
inline DType stats_dtype_of(DType data) { return data == DType::kF64 ? DType::kF64 : DType::kF32; }

inline void check_index_dtype(const char* kernel, const Tensor& index) {
  DTRN_ASSERT(index.dtype() == DType::kI32 || index.dtype() == DType::kI64, kernel,
              ": index must be i32 or i64, got ", index.describe());
}

// At least `bytes` of device memory on `device`, 256-byte aligned, from the caching allocator; freed
// when the tensor goes, which is safe while work using it is still queued (Note [One stream per
// device] in cuda_context.h).
inline Tensor scratch_tensor(size_t bytes, int device) {
  const int64_t words = static_cast<int64_t>((bytes + 7) / 8);
  return Tensor::empty({words > 0 ? words : 1}, DType::kF64, Device::cuda(device));
}

// Makes `device` current and names its stream, for the duration of one kernel call.
struct OnDevice {
  explicit OnDevice(int device) : guard(device), stream(stream_for(device)) {}
  DeviceGuard guard;
  cudaStream_t stream;
};

}  // namespace dtrn::cuda

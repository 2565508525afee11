// CudaBackend's pointwise training kernels: affine, SiLU, SwiGLU with their backwards, and AdamW.
// Each validates its tensors (kernel_args.h) and calls the launcher (activation.h) on the
// tensors' device and stream.
#include "cuda/activation.h"
#include "cuda/cuda_backend.h"
#include "cuda/kernel_args.h"

namespace dtrn {

using cuda::check_compute_dtype;
using cuda::elem_type_of;

namespace {

void check_same_shape(const char* kernel, const Tensor& a, std::initializer_list<const Tensor*> rest) {
  for (const Tensor* t : rest) {
    DTRN_ASSERT(t->shape() == a.shape(), kernel, ": shapes differ: ", a.describe(), " vs ",
                t->describe());
  }
}

// The raw pointer of a backward's optional activation output (backend.h), checked like the kernel's
// other outputs against `like`; null where out is undefined.
void* optional_output(const char* kernel, const Tensor& like, const Tensor& out) {
  if (!out.defined()) return nullptr;
  check_compute_dtype(kernel, like, {&out});
  check_same_shape(kernel, like, {&out});
  cuda::device_of_all(kernel, {&like, &out});
  return out.raw_data();
}

}  // namespace

void CudaBackend::affine(const Tensor& x, double alpha, double beta, const Tensor& out) {
  check_compute_dtype("affine", x, {&out});
  check_same_shape("affine", x, {&out});
  cuda::OnDevice on(cuda::device_of_all("affine", {&x, &out}));
  cuda::launch_affine(elem_type_of(x.dtype()), x.raw_data(), alpha, beta, out.raw_data(), x.numel(),
                      on.stream);
}

void CudaBackend::silu(const Tensor& x, const Tensor& out) {
  check_compute_dtype("silu", x, {&out});
  check_same_shape("silu", x, {&out});
  cuda::OnDevice on(cuda::device_of_all("silu", {&x, &out}));
  cuda::launch_silu(elem_type_of(x.dtype()), x.raw_data(), out.raw_data(), x.numel(), on.stream);
}

void CudaBackend::silu_backward(const Tensor& x, const Tensor& grad, const Tensor& dx,
                                const Tensor& out) {
  check_compute_dtype("silu_backward", x, {&grad, &dx});
  check_same_shape("silu_backward", x, {&grad, &dx});
  void* act = optional_output("silu_backward", x, out);
  cuda::OnDevice on(cuda::device_of_all("silu_backward", {&x, &grad, &dx}));
  cuda::launch_silu_backward(elem_type_of(x.dtype()), x.raw_data(), grad.raw_data(), dx.raw_data(),
                             act, x.numel(), on.stream);
}

void CudaBackend::swiglu(const Tensor& gate, const Tensor& up, const Tensor& out) {
  check_compute_dtype("swiglu", gate, {&up, &out});
  check_same_shape("swiglu", gate, {&up, &out});
  cuda::OnDevice on(cuda::device_of_all("swiglu", {&gate, &up, &out}));
  cuda::launch_swiglu(elem_type_of(gate.dtype()), gate.raw_data(), up.raw_data(), out.raw_data(),
                      gate.numel(), on.stream);
}

void CudaBackend::swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& grad,
                                  const Tensor& dgate, const Tensor& dup, const Tensor& out) {
  check_compute_dtype("swiglu_backward", gate, {&up, &grad, &dgate, &dup});
  check_same_shape("swiglu_backward", gate, {&up, &grad, &dgate, &dup});
  void* act = optional_output("swiglu_backward", gate, out);
  cuda::OnDevice on(cuda::device_of_all("swiglu_backward", {&gate, &up, &grad, &dgate, &dup}));
  cuda::launch_swiglu_backward(elem_type_of(gate.dtype()), gate.raw_data(), up.raw_data(),
                               grad.raw_data(), dgate.raw_data(), dup.raw_data(), act, gate.numel(),
                               on.stream);
}

}  // namespace dtrn

// CPU elementwise kernels: broadcasting binary ops over strided views, affine, SiLU and SwiGLU.
#include <cmath>

#include "cpu/cpu_backend.h"
#include "cpu/dispatch.h"
#include "cpu/strided.h"

namespace dtrn {
namespace {

template <typename T>
T apply(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::kAdd: return a + b;
    case BinaryOp::kSub: return a - b;
    case BinaryOp::kMul: return a * b;
  }
  return T(0);
}

template <typename T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

}  // namespace

void CpuBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  dispatch_floating(out.dtype(), "binary", [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* po = out.data<T>();
    const int64_t n = out.numel();
    if (a.is_contiguous() && b.is_contiguous()) {
#pragma omp parallel for if (n > 32768)
      for (int64_t i = 0; i < n; ++i) po[i] = apply(op, pa[i], pb[i]);
      return;
    }
    for_each_strided<3>(out.shape(), {&a.strides(), &b.strides(), &out.strides()},
                        [&](const std::array<int64_t, 3>& o) { po[o[2]] = apply(op, pa[o[0]], pb[o[1]]); });
  });
}

void CpuBackend::affine(const Tensor& x, double alpha, double beta, const Tensor& out) {
  dispatch_floating(out.dtype(), "affine", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* po = out.data<T>();
    const T a = static_cast<T>(alpha), b = static_cast<T>(beta);
    const int64_t n = out.numel();
#pragma omp parallel for if (n > 32768)
    for (int64_t i = 0; i < n; ++i) po[i] = a * px[i] + b;
  });
}

void CpuBackend::add_into(const Tensor& dst, const Tensor& src_in) {
  const Tensor src = src_in.dtype() == dst.dtype() ? src_in : src_in.detach().to(dst.dtype());
  dispatch_floating(dst.dtype(), "add_into", [&](auto tag) {
    using T = decltype(tag);
    const T* ps = src.data<T>();
    T* pd = dst.data<T>();
    const int64_t n = dst.numel();
#pragma omp parallel for if (n > 32768)
    for (int64_t i = 0; i < n; ++i) pd[i] += ps[i];
  });
}

void CpuBackend::silu(const Tensor& x, const Tensor& out) {
  dispatch_floating(out.dtype(), "silu", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* po = out.data<T>();
    const int64_t n = out.numel();
#pragma omp parallel for if (n > 16384)
    for (int64_t i = 0; i < n; ++i) po[i] = px[i] * sigmoid(px[i]);
  });
}

void CpuBackend::silu_backward(const Tensor& x, const Tensor& grad, const Tensor& dx,
                               const Tensor& out) {
  dispatch_floating(dx.dtype(), "silu_backward", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    const T* pg = grad.data<T>();
    T* pd = dx.data<T>();
    T* pa = out.defined() ? out.data<T>() : nullptr;
    const int64_t n = dx.numel();
    // d/dx x*s(x) = s(x) * (1 + x * (1 - s(x))); the activation x*s(x) is silu's expression.
#pragma omp parallel for if (n > 16384)
    for (int64_t i = 0; i < n; ++i) {
      const T s = sigmoid(px[i]);
      pd[i] = pg[i] * s * (T(1) + px[i] * (T(1) - s));
      if (pa != nullptr) pa[i] = px[i] * s;
    }
  });
}

void CpuBackend::swiglu(const Tensor& gate, const Tensor& up, const Tensor& out) {
  dispatch_floating(out.dtype(), "swiglu", [&](auto tag) {
    using T = decltype(tag);
    const T* pg = gate.data<T>();
    const T* pu = up.data<T>();
    T* po = out.data<T>();
    const int64_t n = out.numel();
#pragma omp parallel for if (n > 16384)
    for (int64_t i = 0; i < n; ++i) po[i] = pg[i] * sigmoid(pg[i]) * pu[i];
  });
}

void CpuBackend::swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& grad,
                                 const Tensor& dgate, const Tensor& dup, const Tensor& out) {
  dispatch_floating(grad.dtype(), "swiglu_backward", [&](auto tag) {
    using T = decltype(tag);
    const T* pg = gate.data<T>();
    const T* pu = up.data<T>();
    const T* pd = grad.data<T>();
    T* dg = dgate.data<T>();
    T* du = dup.data<T>();
    T* pa = out.defined() ? out.data<T>() : nullptr;
    const int64_t n = grad.numel();
#pragma omp parallel for if (n > 16384)
    for (int64_t i = 0; i < n; ++i) {
      const T s = sigmoid(pg[i]);
      du[i] = pd[i] * pg[i] * s;
      dg[i] = pd[i] * pu[i] * s * (T(1) + pg[i] * (T(1) - s));
      if (pa != nullptr) pa[i] = pg[i] * s * pu[i];  // swiglu's expression
    }
  });
}

}  // namespace dtrn

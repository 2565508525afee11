// CPU AdamW update (the formula is in optim.h), single- and multi-tensor.
#include <algorithm>
#include <cmath>

#include "cpu/cpu_backend.h"
#include "cpu/dispatch.h"

namespace dtrn {

void CpuBackend::adamw(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                       const AdamWArgs& a) {
  dispatch_floating(param.dtype(), "adamw", [&](auto tag) {
    using T = decltype(tag);
    T* p = param.data<T>();
    const T* g = grad.data<T>();
    T* pm = m.data<T>();
    T* pv = v.data<T>();
    const int64_t n = param.numel();
#pragma omp parallel for if (n > 32768)
    for (int64_t i = 0; i < n; ++i) {
      const double gi = a.grad_scale * g[i];
      const double mi = a.beta1 * pm[i] + (1 - a.beta1) * gi;
      const double vi = a.beta2 * pv[i] + (1 - a.beta2) * gi * gi;
      pm[i] = static_cast<T>(mi);
      pv[i] = static_cast<T>(vi);
      const double update = (mi / a.bias_correction1) / (std::sqrt(vi / a.bias_correction2) + a.eps);
      p[i] = static_cast<T>(p[i] - a.lr * (update + a.weight_decay * p[i]));
    }
  });
}

void CpuBackend::sum_squares_multi(const std::vector<Tensor>& tensors, const Tensor& out) {
  double total = 0;
  for (const Tensor& t : tensors) total += sum_squares(t);
  dispatch_floating(out.dtype(), "sum_squares_multi", [&](auto tag) {
    using T = decltype(tag);
    out.data<T>()[0] = static_cast<T>(total);
  });
}

void CpuBackend::adamw_multi(const std::vector<AdamWTensors>& entries, const AdamWArgs& args,
                             const Tensor& norm_sq, double max_norm) {
  AdamWArgs a = args;
  a.grad_scale = 1.0;
  if (max_norm > 0) {
    const double norm = std::sqrt(norm_sq.to_vector()[0]);
    if (norm > max_norm) a.grad_scale = max_norm / norm;
  }
  for (const AdamWTensors& e : entries) {
    a.weight_decay = e.weight_decay;
    adamw(e.param, e.grad, e.m, e.v, a);
    if (e.compute.defined()) copy(e.param, e.compute);
  }
}

}  // namespace dtrn

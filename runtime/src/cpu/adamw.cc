// CPU AdamW update (the formula is in optim.h).
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
      const double gi = g[i];
      const double mi = a.beta1 * pm[i] + (1 - a.beta1) * gi;
      const double vi = a.beta2 * pv[i] + (1 - a.beta2) * gi * gi;
      pm[i] = static_cast<T>(mi);
      pv[i] = static_cast<T>(vi);
      const double update = (mi / a.bias_correction1) / (std::sqrt(vi / a.bias_correction2) + a.eps);
      p[i] = static_cast<T>(p[i] - a.lr * (update + a.weight_decay * p[i]));
    }
  });
}

}  // namespace dtrn

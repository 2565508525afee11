// CPU reductions: sum over the middle of an [outer, n, inner] view, and the f64 sum of squares.
#include "cpu/cpu_backend.h"
#include "cpu/dispatch.h"

namespace dtrn {

void CpuBackend::sum_dim(const Tensor& x, int64_t outer, int64_t n, int64_t inner, const Tensor& out) {
  dispatch_floating(out.dtype(), "sum", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* po = out.data<T>();
    // Accumulate in double: sums over many tokens in f32 lose digits the gradient checks would see.
#pragma omp parallel for collapse(2) if (outer * inner * n > 32768)
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t i = 0; i < inner; ++i) {
        double acc = 0;
        const T* p = px + o * n * inner + i;
        for (int64_t j = 0; j < n; ++j) acc += p[j * inner];
        po[o * inner + i] = static_cast<T>(acc);
      }
    }
  });
}

double CpuBackend::sum_squares(const Tensor& x) {
  return dispatch_floating(x.dtype(), "sum_squares", [&](auto tag) {
    using T = decltype(tag);
    const T* p = x.data<T>();
    const int64_t n = x.numel();
    double acc = 0;
#pragma omp parallel for reduction(+ : acc) if (n > 32768)
    for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(p[i]) * p[i];
    return acc;
  });
}

}  // namespace dtrn

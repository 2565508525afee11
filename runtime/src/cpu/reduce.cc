// CPU reductions: sum over the middle of an [outer, n, inner] view, and the f64 sum of squares.
#include <algorithm>
#include <vector>

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
    // Fixed chunks summed in a fixed order: an OpenMP reduction may combine partial sums in any order,
    // and the gradient norm (hence clipping, hence the whole run) must be bitwise reproducible.
    constexpr int64_t kChunk = 1 << 14;
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    std::vector<double> partial(chunks, 0.0);
#pragma omp parallel for if (chunks > 1)
    for (int64_t c = 0; c < chunks; ++c) {
      double acc = 0;
      for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) acc += static_cast<double>(p[i]) * p[i];
      partial[c] = acc;
    }
    double total = 0;
    for (double v : partial) total += v;
    return total;
  });
}

}  // namespace dtrn
